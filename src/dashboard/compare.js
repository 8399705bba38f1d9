// Side by side: the same inputs answered by several batches (one per model), joined by custom_id.
import { json } from './api.js';
import { live } from './live.js';
import { exportStarred, outputCell, starButton, tokensText } from './results.js';
import { clear, fmt, h, renderInput, statusBadge } from './ui.js';

const PAGE = 50;

export function compareView(root, ids) {
  const batchIds = (ids ?? '').split(',').filter(Boolean);
  if (batchIds.length < 2) return comparePicker(root);
  let offset = 0;
  const head = h('div');
  const table = h('div#compare-table');
  const pager = h('div.pager');
  clear(
    root,
    h(
      'section.card.wide',
      h(
        'div.card-head',
        h('h2', `Compare ${batchIds.length} batches`),
        h(
          'div.actions',
          h('button', { type: 'button', onclick: () => exportStarred(batchIds.join(',')) }, '★ Export starred (JSONL)'),
        ),
      ),
      head,
      table,
      pager,
    ),
  );
  const load = async () => {
    let r;
    try {
      r = await json(`/ops/compare?batch_ids=${batchIds.join(',')}&offset=${offset}&limit=${PAGE}`);
    } catch (e) {
      return clear(table, h('p.bad', e.message));
    }
    clear(
      head,
      h(
        'div.legend',
        r.batches.map((b) =>
          h(
            'span.legend-item',
            h('strong', b.model ?? '–'),
            ' ',
            h('a.mono', { href: `#/results/${b.id}` }, b.id),
            ' ',
            statusBadge(b.status),
          ),
        ),
      ),
    );
    clear(
      table,
      h(
        'table.compare',
        h(
          'thead',
          h(
            'tr',
            h('th', 'custom_id'),
            h('th', 'Input'),
            r.batches.map((b) => h('th', { dataset: { batch: b.id } }, b.model ?? b.id)),
          ),
        ),
        h(
          'tbody',
          r.data.map((row) =>
            h(
              'tr',
              { dataset: { customId: row.custom_id } },
              h('td.mono', row.custom_id),
              h('td', renderInput(row.input)),
              row.results.map((x, i) =>
                x === null
                  ? h('td.muted', 'not in this batch')
                  : h(
                      'td',
                      { dataset: { batch: r.batches[i].id } },
                      outputCell(x),
                      h(
                        'div.cell-foot',
                        starButton(x.batch_id, { ...x, custom_id: row.custom_id }),
                        h('span.sub', `${tokensText(x)} tokens · ${fmt.ms(x.latency_ms)}`),
                      ),
                    ),
              ),
            ),
          ),
        ),
      ),
    );
    clear(
      pager,
      h(
        'span.muted',
        `${fmt.int(r.offset + 1)}–${fmt.int(r.offset + r.data.length)} of ${fmt.int(r.total)} custom_ids`,
      ),
      h(
        'button',
        {
          type: 'button',
          disabled: offset === 0 || undefined,
          onclick: () => ((offset = Math.max(0, offset - PAGE)), load()),
        },
        '← Previous',
      ),
      h(
        'button',
        { type: 'button', disabled: !r.has_more || undefined, onclick: () => ((offset += PAGE), load()) },
        'Next →',
      ),
    );
  };
  void load();
  return () => undefined;
}

function comparePicker(root) {
  const chosen = new Set();
  const go = h(
    'button.primary',
    { type: 'button', disabled: true, onclick: () => (location.hash = `#/compare/${[...chosen].join(',')}`) },
    'Compare',
  );
  const box = h('div');
  const draw = () => {
    clear(
      box,
      h(
        'table',
        h(
          'tbody',
          live.batchList().map((b) =>
            h(
              'tr',
              h(
                'td',
                h('input', {
                  type: 'checkbox',
                  checked: chosen.has(b.id) || undefined,
                  onchange: (e) => (
                    e.target.checked ? chosen.add(b.id) : chosen.delete(b.id),
                    (go.disabled = chosen.size < 2)
                  ),
                }),
              ),
              h('td.mono', b.id),
              h('td', b.model ?? '–'),
              h('td', statusBadge(b.status)),
              h('td', `${fmt.int(b.request_counts?.total)} requests`),
            ),
          ),
        ),
      ),
    );
  };
  clear(
    root,
    h(
      'section.card',
      h('div.card-head', h('h2', 'Compare batches'), h('div.actions', go)),
      h(
        'p.muted',
        'Pick two or more batches run over the same inputs (one per model); their answers are joined by custom_id.',
      ),
      box,
    ),
  );
  draw();
  return live.subscribe(draw);
}
