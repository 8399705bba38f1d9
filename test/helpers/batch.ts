import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type OpenAI from 'openai';
import { setTimeout as sleep } from 'node:timers/promises';

export function chatLines(
  n: number,
  model: string,
  extra: (i: number) => Record<string, unknown> = () => ({}),
): string {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    lines.push(
      JSON.stringify({
        custom_id: `req-${i}`,
        method: 'POST',
        url: '/v1/chat/completions',
        body: { model, messages: [{ role: 'user', content: `question number ${i}` }], ...extra(i) },
      }),
    );
  }
  return lines.join('\n') + '\n';
}

export function writeJsonl(dir: string, name: string, text: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
}

export async function waitForBatch(
  client: OpenAI,
  id: string,
  statuses: string[],
  timeoutMs = 60_000,
): Promise<OpenAI.Batches.Batch> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const b = await client.batches.retrieve(id);
    if (statuses.includes(b.status)) return b;
    if (Date.now() > deadline)
      throw new Error(
        `batch ${id} still ${b.status} after ${timeoutMs} ms (counts ${JSON.stringify(b.request_counts)})`,
      );
    await sleep(100);
  }
}

export async function readLinesOf(client: OpenAI, fileId: string | null | undefined): Promise<Record<string, any>[]> {
  if (!fileId) return [];
  const text = await (await client.files.content(fileId)).text();
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}
