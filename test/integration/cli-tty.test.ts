import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, SIM_MODEL, type TestServer } from '../helpers/app.js';
import { chatLines, waitForBatch } from '../helpers/batch.js';
import { waitUntil } from '../helpers/processes.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const hasTmux = spawnSync('tmux', ['-V']).status === 0;

/**
 * The CLI on a real terminal: tmux gives it a pty, send-keys presses keys, capture-pane reads
 * the screen. A private tmux socket (-L) keeps it apart from any tmux the user runs.
 */
describe.skipIf(!hasTmux)('batchwright watch on a terminal (tmux)', () => {
  const socket = `bw-cli-${randomBytes(4).toString('hex')}`;
  const tmux = (...args: string[]) => execFileSync('tmux', ['-L', socket, ...args], { encoding: 'utf8' });
  const screen = () => tmux('capture-pane', '-p', '-J', '-S', '-200', '-t', 'cli');
  let server: TestServer;
  let work: string;

  beforeAll(async () => {
    // No worker: the batch waits for its model, which is what the keys are for.
    server = await startTestServer({ worker: false });
    work = mkdtempSync(path.join(tmpdir(), 'bw-cli-tty-'));
  });
  afterAll(async () => {
    spawnSync('tmux', ['-L', socket, 'kill-server']);
    await server?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('shows a bar and why it waits; d prints details, c then y cancels (exit 4)', async () => {
    const file = await server.client.files.create({
      file: new File([chatLines(3, SIM_MODEL)], 'tty.jsonl'),
      purpose: 'batch',
    });
    const b = await server.client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const exitFile = path.join(work, 'exit');
    const cmd = [
      `cd ${ROOT} &&`,
      `env OPENAI_BASE_URL=${server.baseUrl}/v1 OPENAI_API_KEY= CI= ${process.execPath} --import tsx src/cli/main.ts watch ${b.id} --interval 300;`,
      `echo EXIT=$? > ${exitFile}; sleep 600`,
    ].join(' ');
    tmux('new-session', '-d', '-s', 'cli', '-x', '200', '-y', '50', cmd);

    await waitUntil(() => /waiting: /.test(screen()), 60_000, 'the waiting reason on screen');
    const s1 = screen();
    expect(s1).toContain('keys: c cancel the batch');
    expect(s1).toMatch(/0\/3 \| -- req\/s \| ETA --|0\/3 \| [\d.]+ req\/s/);
    expect(s1).toMatch(new RegExp(`waiting: .*${SIM_MODEL}`));

    tmux('send-keys', '-t', 'cli', 'd');
    await waitUntil(() => /waiting reason: /.test(screen()), 20_000, 'details after d');
    expect(screen()).toContain(`"id": "${b.id}"`);

    tmux('send-keys', '-t', 'cli', 'Enter');
    await waitUntil(() => /still waiting/.test(screen()), 20_000, 'keep waiting after Enter');

    tmux('send-keys', '-t', 'cli', 'c');
    await waitUntil(() => /Cancel batch .*\[y\/N\]/.test(screen()), 20_000, 'the cancel prompt');
    tmux('send-keys', '-t', 'cli', 'y');
    await waitUntil(() => existsSync(exitFile), 60_000, 'the CLI to exit');
    expect(readFileSync(exitFile, 'utf8').trim()).toBe('EXIT=4');
    expect(screen()).toContain('cancel requested');
    expect(screen()).toContain(`batch ${b.id} cancelled`);
    expect((await waitForBatch(server.client, b.id, ['cancelled'])).status).toBe('cancelled');
  });
});
