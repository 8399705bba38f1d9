import { open } from 'node:fs/promises';

export interface RawLine {
  /** 1-based line number in the file. */
  line: number;
  /** Byte offset of the line's first byte, and its length without the newline. */
  offset: number;
  length: number;
  /** The decoded text, or null when the line is too long or not UTF-8. */
  text: string | null;
  problem: 'too_long' | 'invalid_utf8' | null;
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/** Bytes read per call. Two buffers alternate: the next read runs while this one's lines are used. */
const READ_BYTES = 4 << 20;
/**
 * Lines are handed out about this many bytes at a time, not a whole read at once: the caller's
 * strings and parsed objects then die young instead of surviving into the old generation
 * (validating a 200 MB file: ~30 % less time than one batch per 4 MB read).
 */
const SUB_BATCH_BYTES = 256 << 10;

/**
 * Streams a file line by line with byte offsets, in constant memory: a line longer than
 * `maxLineBytes` is reported and skipped without being buffered. Blank lines are skipped, and
 * so is a UTF-8 byte order mark at the start of the file.
 */
export async function* readLines(path: string, maxLineBytes: number): AsyncGenerator<RawLine> {
  for await (const lines of readLineBatches(path, maxLineBytes)) yield* lines;
}

/**
 * readLines, ~256 KB of lines at a time (one await per few hundred lines instead of per line).
 * Memory: two read buffers, one batch of lines, and one line that spans reads.
 */
export async function* readLineBatches(path: string, maxLineBytes: number): AsyncGenerator<RawLine[]> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let tooLong = false;
  let lineStart = 0;
  let lineNo = 1;
  let pos = 0;

  const finish = (endExclusive: number): RawLine | null => {
    const length = endExclusive - lineStart;
    let r: RawLine | null = null;
    if (tooLong) {
      r = { line: lineNo, offset: lineStart, length, text: null, problem: 'too_long' };
    } else {
      let buf = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      let len = buf.length;
      if (len > 0 && buf[len - 1] === 0x0d) len -= 1; // CRLF files
      buf = buf.subarray(0, len);
      if (!isBlank(buf)) {
        try {
          r = { line: lineNo, offset: lineStart, length: len, text: decoder.decode(buf), problem: null };
        } catch {
          r = { line: lineNo, offset: lineStart, length: len, text: null, problem: 'invalid_utf8' };
        }
      }
    }
    pending = [];
    pendingBytes = 0;
    tooLong = false;
    lineNo += 1;
    return r;
  };

  const fh = await open(path, 'r');
  // Double buffering: while this read's lines are split and handed out, the next read fills
  // the other buffer. Lines carry decoded strings, never slices of a buffer, and the bytes of
  // a line that goes on into the next read are copied, so a buffer is free once it is split.
  const bufs = [Buffer.allocUnsafe(READ_BYTES), Buffer.allocUnsafe(READ_BYTES)];
  let which = 0;
  let next = fh.read(bufs[0]!, 0, READ_BYTES, 0);
  try {
    for (;;) {
      const { bytesRead } = await next;
      if (bytesRead === 0) break;
      const chunk = bufs[which]!.subarray(0, bytesRead);
      which ^= 1;
      next = fh.read(bufs[which]!, 0, READ_BYTES, pos + bytesRead);
      let out: RawLine[] = [];
      let outBytes = 0;
      let from = 0;
      // A UTF-8 byte order mark (Windows editors) is not part of the first line: skipped, and
      // the first line's offset starts after it, so its bytes read back as plain JSON.
      if (pos === 0 && bytesRead >= 3 && chunk[0] === 0xef && chunk[1] === 0xbb && chunk[2] === 0xbf) {
        from = 3;
        lineStart = 3;
      }
      for (;;) {
        const nl = chunk.indexOf(0x0a, from);
        const end = nl === -1 ? chunk.length : nl;
        if (!tooLong) {
          if (pendingBytes + (end - from) > maxLineBytes) {
            tooLong = true;
            pending = [];
            pendingBytes = 0;
          } else if (end > from) {
            // The tail of this read is kept across the next one: copy it, the buffer is reused.
            pending.push(nl === -1 ? Buffer.from(chunk.subarray(from, end)) : chunk.subarray(from, end));
            pendingBytes += end - from;
          }
        }
        if (nl === -1) break;
        const r = finish(pos + nl);
        if (r) {
          out.push(r);
          outBytes += r.length;
          if (outBytes >= SUB_BATCH_BYTES) {
            yield out;
            out = [];
            outBytes = 0;
          }
        }
        lineStart = pos + nl + 1;
        from = nl + 1;
      }
      pos += bytesRead;
      if (out.length > 0) yield out;
    }
  } finally {
    // A consumer that stops early leaves the prefetch running: let it end before closing.
    await next.catch(() => undefined);
    await fh.close();
  }
  if (pendingBytes > 0 || tooLong) {
    const r = finish(pos);
    if (r) yield [r];
  }
}

function isBlank(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i];
    if (b !== 0x20 && b !== 0x09 && b !== 0x0d) return false;
  }
  return true;
}
