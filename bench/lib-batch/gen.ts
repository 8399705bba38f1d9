/** Batch input files written in large slices (never the whole file in memory). */
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';

/**
 * Writes `n` chat-completion request lines for `model`. `lineBytes` pads each line's message
 * content so that every line is exactly that many bytes (newline included); 0 = no padding.
 * Returns the file's size in bytes.
 */
export function writeChatBatch(file: string, n: number, model: string, lineBytes = 0, idPrefix = 'req'): number {
  const fd = openSync(file, 'w');
  let total = 0;
  const words =
    'lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua ';
  let buf: string[] = [];
  let bufLen = 0;
  try {
    for (let i = 0; i < n; i++) {
      const mk = (pad: string) =>
        JSON.stringify({
          custom_id: `${idPrefix}-${i}`,
          method: 'POST',
          url: '/v1/chat/completions',
          body: { model, max_tokens: 16, messages: [{ role: 'user', content: `question ${i} ${pad}` }] },
        });
      let line = mk('');
      if (lineBytes > 0) {
        const need = lineBytes - 1 - Buffer.byteLength(line);
        if (need > 0) line = mk(words.repeat(Math.ceil(need / words.length)).slice(0, need));
      }
      buf.push(line, '\n');
      bufLen += line.length + 1;
      if (bufLen > 4 << 20) {
        const s = buf.join('');
        total += writeSync(fd, s);
        buf = [];
        bufLen = 0;
      }
    }
    if (buf.length) total += writeSync(fd, buf.join(''));
    // On disk before anything is timed: the kernel's write-back of a fresh 200 MB file would
    // otherwise compete with the server's own fsyncs during the measurement.
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return total;
}
