// Recorded benchmark runs (POST /ops/benchmarks, bench/batch.ts --record), grouped per model.
import { json } from './api.js';
import { clear, fmt, h } from './ui.js';

export function benchmarksView(root) {
  const box = h('div#benchmarks');
  clear(
    root,
    h(
      'section.card.wide',
      h('h2', 'Benchmark runs per model'),
      h(
        'p.muted',
        'Recorded with node --import tsx bench/batch.ts --record URL (or --import-results). Newest first; bars compare runs of one model.',
      ),
      box,
    ),
  );
  void (async () => {
    let r;
    try {
      r = await json('/ops/benchmarks?limit=500');
    } catch (e) {
      return clear(box, h('p.bad', e.message));
    }
    if (r.data.length === 0) return clear(box, h('p.muted', 'No benchmark runs recorded yet.'));
    const byModel = new Map();
    for (const run of r.data) byModel.set(run.model, [...(byModel.get(run.model) ?? []), run]);
    clear(
      box,
      [...byModel].map(([model, runs]) => {
        const maxRps = Math.max(...runs.map((x) => x.requests_per_s ?? 0), 1);
        const maxTps = Math.max(...runs.map((x) => x.tokens_per_s ?? 0), 1);
        return h(
          'div.bench-model',
          { dataset: { model } },
          h('h3', model, h('span.sub', ` ${runs.length} run${runs.length === 1 ? '' : 's'}`)),
          h(
            'table.bench',
            h(
              'thead',
              h(
                'tr',
                h('th', 'When'),
                h('th', 'Kind'),
                h('th.grow', 'Requests/s'),
                h('th.grow', 'Tokens/s'),
                h('th.num', 'p50'),
                h('th.num', 'p95'),
              ),
            ),
            h(
              'tbody',
              runs.map((x) =>
                h(
                  'tr',
                  h('td.nowrap', fmt.when(x.created_at)),
                  h('td', h('span.tag', x.kind)),
                  h('td.grow', bar(x.requests_per_s, maxRps, fmt.num(x.requests_per_s))),
                  h('td.grow', bar(x.tokens_per_s, maxTps, fmt.int(x.tokens_per_s))),
                  h('td.num', fmt.ms(x.latency_p50_ms)),
                  h('td.num', fmt.ms(x.latency_p95_ms)),
                ),
              ),
            ),
          ),
        );
      }),
    );
  })();
  return () => undefined;
}

function bar(v, max, label) {
  if (v === null || v === undefined) return h('span.muted', '–');
  const fill = h('span.bar-fill');
  fill.style.width = `${(v / max) * 100}%`;
  return h('div.bar', fill, h('span.bar-label', label));
}
