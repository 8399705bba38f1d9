import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/app.js';
import { addKey } from '../helpers/auth.js';

/**
 * The dashboard in a real headless Chromium against the real control plane and a worker with
 * simulator engines: drag and drop a batch, live progress over SSE, results, search, stars,
 * the fine-tuning export, side by side comparison, cancel, download, benchmark runs.
 */
const CHROMIUM = '/usr/bin/chromium';
const SHOTS = process.env.DASHBOARD_SCREENSHOTS === '1';
const DOCS = path.resolve(import.meta.dirname, '../../docs');

const A = 'sim-small';
const B = 'sim-large';
const SLOW = 'sim-slow';
const modelsYaml = `models:
  - id: ${A}
    engine: sim
    startup_timeout_s: 30
    options: { max_num_seqs: 4 }
    sim: { output_tokens: 6, tokens_per_second: 60 }
  - id: ${B}
    engine: sim
    startup_timeout_s: 30
    options: { max_num_seqs: 4 }
    sim: { output_tokens: 12, tokens_per_second: 120 }
  - id: ${SLOW}
    engine: sim
    startup_timeout_s: 30
    options: { max_num_seqs: 2 }
    sim: { output_tokens: 20, tokens_per_second: 20 }
`;

const QUESTIONS = [
  'What is a GPU?',
  'Name three prime numbers.',
  'Why is the sky blue?',
  'Translate "hello" to French.',
  'Tell me about zebras.',
  'What is 12 times 12?',
  'Summarise the plot of Hamlet.',
  'Write a haiku about batches.',
];

function jsonl(
  model: string,
  n = QUESTIONS.length,
  extra: (i: number) => Record<string, unknown> = () => ({}),
): string {
  return Array.from({ length: n }, (_, i) =>
    JSON.stringify({
      custom_id: `q-${i}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: {
        model,
        messages: [
          { role: 'system', content: 'Answer briefly.' },
          { role: 'user', content: QUESTIONS[i % QUESTIONS.length] },
        ],
        ...extra(i),
      },
    }),
  ).join('\n');
}

/** Drops a file on the drop zone the way a browser does: a DataTransfer holding a File. */
async function dropFile(page: Page, name: string, text: string): Promise<void> {
  await page.evaluate(
    ({ name, text }) => {
      const dt = new DataTransfer();
      dt.items.add(new File([text], name, { type: 'application/jsonl' }));
      const zone = document.getElementById('drop')!;
      zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    },
    { name, text },
  );
}

/** The id of the batch the page just created from `name` (shown in the drop zone). */
async function createdBatchId(page: Page, name: string): Promise<string> {
  const status = page.locator('.drop-status');
  await expect.poll(async () => status.getAttribute('data-file'), { timeout: 30_000 }).toBe(name);
  return (await status.getAttribute('data-batch'))!;
}

const row = (page: Page, id: string) => page.locator(`table.batches tr[data-batch="${id}"]`);

describe.skipIf(!existsSync(CHROMIUM))('dashboard in headless Chromium', () => {
  let server: TestServer;
  let ctx: BrowserContext;
  let page: Page;
  let userDir: string;
  const browserErrors: string[] = [];
  let batchA = '';
  let batchB = '';

  const pathBefore = process.env.PATH;
  beforeAll(async () => {
    userDir = mkdtempSync(path.join(tmpdir(), 'bw-chromium-'));
    // An nvidia-smi on PATH for the in-process worker: GPU readings for the fleet view.
    const bin = path.join(userDir, 'bin');
    mkdirSync(bin);
    writeFileSync(
      path.join(bin, 'nvidia-smi'),
      '#!/bin/sh\ncase "$1" in --query-compute-apps*) exit 0 ;; esac\n' +
        'echo "0, GPU-aaaa0000-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 81559, 30512, 51047, 87, 61"\n' +
        'echo "1, GPU-bbbb1111-1111-1111-1111-111111111111, NVIDIA H100 80GB HBM3, 81559, 4, 81555, 0, 33"\n',
    );
    chmodSync(path.join(bin, 'nvidia-smi'), 0o755);
    process.env.PATH = `${bin}:${pathBefore}`;
    server = await startTestServer({ worker: true, modelsYaml, env: { GPU_POLL_MS: '500' } });
    ctx = await chromium.launchPersistentContext(userDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1360, height: 900 },
      acceptDownloads: true,
    });
    page = ctx.pages()[0] ?? (await ctx.newPage());
    page.on('pageerror', (e) => browserErrors.push(String(e)));
    page.on('console', (m) => {
      if (m.type() === 'error') browserErrors.push(m.text());
    });
    // Nothing outside this machine may be fetched: every request the page makes goes to a test server.
    await ctx.route('**/*', (route) =>
      route.request().url().startsWith('http://127.0.0.1:') ? route.continue() : route.abort(),
    );
  }, 120_000);

  afterAll(async () => {
    await ctx?.close();
    await server?.close();
    process.env.PATH = pathBefore;
    if (userDir) rmSync(userDir, { recursive: true, force: true });
  });

  it('submits a dropped JSONL file and follows it to completed over SSE', async () => {
    await page.goto(`${server.baseUrl}/dashboard/`);
    await expect.poll(() => page.locator('#live').getAttribute('data-state'), { timeout: 20_000 }).toBe('live');
    // From here on the batch list must move by the event stream alone: no more /ops/batches polls.
    const polls: string[] = [];
    page.on('request', (r) => {
      if (r.url().includes('/ops/batches?')) polls.push(r.url());
    });
    await dropFile(page, 'questions-small.jsonl', jsonl(A));
    batchA = await createdBatchId(page, 'questions-small.jsonl');
    const seen = new Set<string>();
    await expect
      .poll(
        async () => {
          const s = await row(page, batchA).getAttribute('data-status');
          if (s) seen.add(s);
          return s;
        },
        { timeout: 60_000, interval: 100 },
      )
      .toBe('completed');
    expect(seen.has('in_progress') || seen.has('validating')).toBe(true);
    await expect
      .poll(() => row(page, batchA).locator('td.num').first().textContent())
      .toBe(`${QUESTIONS.length} / ${QUESTIONS.length}`);
    // Polls happen only when a batch leaves the active list (to read its final state).
    expect(polls.length).toBeLessThanOrEqual(3);
  });

  it('shows validation errors of a bad file', async () => {
    const bad = `${jsonl(A, 2)}\n{"custom_id":"q-0","method":"POST","url":"/v1/chat/completions","body":{"model":"${A}","messages":[]}}\nnot json`;
    await dropFile(page, 'broken.jsonl', bad);
    const problems = page.locator('.drop-status .validation');
    await expect.poll(() => problems.textContent(), { timeout: 30_000 }).toMatch(/failed validation/);
    const text = (await problems.textContent())!;
    expect(text).toMatch(/line 4/);
    expect(text).toMatch(/line 3/);
  });

  it('opens the results, searches them and stars two answers', async () => {
    await row(page, batchA).click();
    await page.locator('#batch-detail a', { hasText: 'Results' }).click();
    const rows = page.locator('#results-table tbody tr');
    await expect.poll(() => rows.count(), { timeout: 20_000 }).toBe(QUESTIONS.length);
    const first = rows.first();
    expect(await first.locator('.msg.r-user .text').textContent()).toBe(QUESTIONS[0]);
    expect(await first.locator('.out').textContent()).toContain('GPU');
    expect(await first.locator('td.num').last().textContent()).toMatch(/\d+ ms/);

    await page.fill('#results-search', 'zebras');
    await expect.poll(() => rows.count()).toBe(1);
    expect(await rows.first().getAttribute('data-custom-id')).toBe('q-4');
    await page.fill('#results-search', '');
    await expect.poll(() => rows.count()).toBe(QUESTIONS.length);

    for (const id of ['q-1', 'q-4']) {
      const star = page.locator(`#results-table tr[data-custom-id="${id}"] button.star`);
      await star.click();
      await expect.poll(() => star.getAttribute('aria-pressed')).toBe('true');
    }
    await page.check('#results-starred');
    await expect.poll(() => rows.count()).toBe(2);
    if (SHOTS) await page.uncheck('#results-starred');
    if (SHOTS) await expect.poll(() => rows.count()).toBe(QUESTIONS.length);
    if (SHOTS) await page.screenshot({ path: path.join(DOCS, 'dashboard-results.png') });
  });

  it('exports the starred answers as chat fine-tuning JSONL', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export-starred')]);
    expect(download.suggestedFilename()).toBe('starred.jsonl');
    const lines = readFileSync(await download.path(), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(2);
    expect(lines[0].messages.slice(0, 2)).toEqual([
      { role: 'system', content: 'Answer briefly.' },
      { role: 'user', content: QUESTIONS[1] },
    ]);
    expect(lines[0].messages[2].role).toBe('assistant');
    expect(lines[0].messages[2].content).toContain('prime');
    expect(lines[1].messages[1].content).toBe(QUESTIONS[4]);
  });

  it('runs the same inputs on a second model and compares them side by side', async () => {
    await page.goto(`${server.baseUrl}/dashboard/#/`);
    await dropFile(page, 'questions-large.jsonl', jsonl(B));
    batchB = await createdBatchId(page, 'questions-large.jsonl');
    await expect.poll(() => row(page, batchB).getAttribute('data-status'), { timeout: 60_000 }).toBe('completed');
    await row(page, batchA).locator('input[type=checkbox]').check();
    await row(page, batchB).locator('input[type=checkbox]').check();
    await page.click('#compare-selected');
    const rows = page.locator('#compare-table tbody tr');
    await expect.poll(() => rows.count(), { timeout: 20_000 }).toBe(QUESTIONS.length);
    const heads = await page.locator('#compare-table thead th').allTextContents();
    expect(heads.slice(2)).toEqual([A, B]);
    const zebra = page.locator('#compare-table tr[data-custom-id="q-4"]');
    expect(await zebra.locator('.msg.r-user .text').textContent()).toBe(QUESTIONS[4]);
    const cells = zebra.locator('td[data-batch]');
    expect(await cells.count()).toBe(2);
    // 6 and 12 completion tokens: the two models' answers differ, and the stars of A show.
    expect(await cells.nth(0).locator('.sub').textContent()).toMatch(/→ 6 tokens/);
    expect(await cells.nth(1).locator('.sub').textContent()).toMatch(/→ 12 tokens/);
    expect(await cells.nth(0).locator('button.star').getAttribute('aria-pressed')).toBe('true');
    expect(await cells.nth(1).locator('button.star').getAttribute('aria-pressed')).toBe('false');
    if (SHOTS) await page.screenshot({ path: path.join(DOCS, 'dashboard-compare.png') });
  });

  it('cancels a running batch', async () => {
    await page.goto(`${server.baseUrl}/dashboard/#/`);
    await dropFile(page, 'slow.jsonl', jsonl(SLOW, 40));
    const id = await createdBatchId(page, 'slow.jsonl');
    await expect.poll(() => row(page, id).getAttribute('data-status'), { timeout: 60_000 }).toBe('in_progress');
    // Live progress moves while it runs (each request takes ~1 s on the slow sim).
    const done = async () =>
      Number((await row(page, id).locator('td.num').first().textContent())!.split('/')[0]!.trim());
    await expect.poll(done, { timeout: 60_000, interval: 250 }).toBeGreaterThanOrEqual(4);
    // The detail panel (opened on submit) follows the live counts too.
    await expect
      .poll(async () => page.locator('#batch-detail dl.facts').textContent(), { timeout: 20_000 })
      .toMatch(/[1-9]\d* completed/);
    if (SHOTS) {
      await expect
        .poll(async () => row(page, id).locator('td.num').nth(2).textContent(), { timeout: 20_000 })
        .toMatch(/\/s/);
      await page.screenshot({ path: path.join(DOCS, 'dashboard.png') });
    }
    await row(page, id).click();
    await page.click('#batch-detail [data-action=cancel]');
    await expect
      .poll(() => row(page, id).getAttribute('data-status'), { timeout: 60_000, interval: 200 })
      .toBe('cancelled');
    const b = await server.client.batches.retrieve(id);
    expect(b.status).toBe('cancelled');
    expect(b.request_counts!.completed).toBeLessThan(40);
    // The panel follows the end: Cancel is gone, the error file (batch_cancelled lines) can be downloaded.
    const errors = page.locator('#batch-detail [data-action=download-errors]');
    await errors.waitFor({ timeout: 20_000 });
    expect(await page.locator('#batch-detail [data-action=cancel]').count()).toBe(0);
    const [download] = await Promise.all([page.waitForEvent('download'), errors.click()]);
    const lines = readFileSync(await download.path(), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.length).toBe(40 - b.request_counts!.completed);
    expect(lines.every((l) => l.error?.code === 'batch_cancelled')).toBe(true);
  });

  it('downloads a batch output file (the batch opened from the keyboard)', async () => {
    await row(page, batchA).focus();
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('#batch-detail h2 .mono').textContent(), { timeout: 20_000 }).toBe(batchA);
    const button = page.locator('#batch-detail [data-action=download-output]');
    await button.waitFor({ timeout: 20_000 });
    const [download] = await Promise.all([page.waitForEvent('download'), button.click()]);
    expect(download.suggestedFilename()).toBe(`${batchA}-output.jsonl`);
    const lines = readFileSync(await download.path(), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.custom_id).sort()).toEqual(QUESTIONS.map((_, i) => `q-${i}`).sort());
    expect(lines.every((l) => l.response.status_code === 200)).toBe(true);
  });

  it('shows the fleet and recorded benchmark runs per model', async () => {
    const engines = page.locator('#fleet tr[data-engine]');
    await expect.poll(() => engines.count(), { timeout: 20_000 }).toBeGreaterThan(0);
    await expect.poll(() => page.locator('#gpus tbody tr').count(), { timeout: 20_000 }).toBe(2);
    expect(await page.locator('#gpus tbody tr').first().textContent()).toContain('H100');
    for (const [model, rps, tps, p50, p95, at] of [
      [A, 410.2, 2460, 48, 95, 1_790_000_000],
      [A, 455.8, 2735, 44, 88, 1_790_086_400],
      [B, 212.5, 2550, 96, 180, 1_790_000_000],
    ] as const) {
      const r = await fetch(`${server.baseUrl}/ops/benchmarks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          model,
          kind: 'batch',
          requests_per_s: rps,
          tokens_per_s: tps,
          latency_p50_ms: p50,
          latency_p95_ms: p95,
          created_at: at,
        }),
      });
      expect(r.status).toBe(200);
    }
    await page.goto(`${server.baseUrl}/dashboard/#/benchmarks`);
    const models = page.locator('#benchmarks .bench-model');
    await expect.poll(() => models.count(), { timeout: 20_000 }).toBe(2);
    const a = page.locator(`#benchmarks .bench-model[data-model="${A}"] tbody tr`);
    expect(await a.count()).toBe(2);
    expect(await a.first().textContent()).toContain('455.8');
    if (SHOTS) await page.screenshot({ path: path.join(DOCS, 'dashboard-benchmarks.png') });
    if (SHOTS)
      for (const f of ['dashboard.png', 'dashboard-results.png'])
        expect(statSync(path.join(DOCS, f)).size).toBeLessThan(300_000);
  });

  it('asks for a key when the server has API keys, and then shows its data', async () => {
    const keyed = await startTestServer({ modelsYaml });
    try {
      const key = addKey(keyed, { name: 'dashboard', admin: true });
      await page.goto(`${keyed.baseUrl}/dashboard/`);
      const dialog = page.locator('#key-dialog');
      await expect.poll(() => dialog.getAttribute('open'), { timeout: 20_000 }).toBe('');
      await page.fill('#key-input', key);
      await page.click('#key-form button[type=submit]');
      await expect.poll(() => page.locator('#live').getAttribute('data-state'), { timeout: 20_000 }).toBe('live');
      expect(await page.evaluate(() => localStorage.getItem('batchwright.apiKey'))).toBe(key);
      await expect.poll(() => page.locator('#batches-table').textContent()).toContain('No batches yet');
    } finally {
      await page.goto('about:blank');
      await keyed.close();
    }
  });

  it('raised no error in the page', () => {
    // 4xx answers the page handled (the bad file's upload is accepted; nothing else fails).
    expect(browserErrors.filter((e) => !/Failed to load resource/.test(e))).toEqual([]);
  });
});
