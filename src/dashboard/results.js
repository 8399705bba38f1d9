// Results of one batch: inputs next to answers, search and filters, stars, export.
import { download, json } from './api.js';
import { live } from './live.js';
import { clear, debounce, fmt, h, renderInput, statusBadge, toast } from './ui.js';

const PAGE = 50;

export function batchPicker(root, title, hint, hrefOf) {
  const box = h('div');
  const draw = () => {
    const list = live.batchList();
    clear(
      box,
      list.length === 0
        ? h('p.muted', 'No batches yet.')
        : h(
            'table',
            h(
              'tbody',
              list.map((b) =>
                h(
                  'tr',
                  h('td', h('a.mono', { href: hrefOf(b) }, b.id)),
                  h('td', b.model ?? '–'),
                  h('td', statusBadge(b.status)),
                  h('td', fmt.ago(b.created_at)),
                ),
              ),
            ),
          ),
    );
  };
  clear(root, h('section.card', h('h2', title), h('p.muted', hint), box));
  draw();
  return live.subscribe(draw);
}

export function resultsView(root, batchId) {
  if (!batchId)
    return batchPicker(
      root,
      'Results',
      'Pick a batch to see its answers next to their inputs.',
      (b) => `#/results/${b.id}`,
    );
  const state = { q: '', status: '', starred: false, offset: 0 };
  const search = h('input#results-search', {
    type: 'search',
    placeholder: 'Search custom_id, input and output…',
    'aria-label': 'Search results',
  });
  const status = h(
    'select#results-status',
    { 'aria-label': 'Filter by status' },
    h('option', { value: '' }, 'All results'),
    h('option', { value: 'ok' }, 'Answers only'),
    h('option', { value: 'error' }, 'Errors only'),
  );
  const starred = h('input#results-starred', { type: 'checkbox' });
  const title = h('h2', 'Results of ', h('span.mono', batchId));
  const meta = h('div.sub');
  const table = h('div#results-table');
  const pager = h('div.pager');
  const exportBtn = h(
    'button.primary#export-starred',
    { type: 'button', onclick: () => exportStarred(batchId) },
    '★ Export starred (JSONL)',
  );
  clear(
    root,
    h(
      'section.card.wide',
      h('div.card-head', h('div', title, meta), h('div.actions', exportBtn)),
      h('div.filters', search, status, h('label.check', starred, ' Starred only')),
      table,
      pager,
    ),
  );

  const load = async () => {
    const p = new URLSearchParams({ offset: String(state.offset), limit: String(PAGE) });
    if (state.q) p.set('q', state.q);
    if (state.status) p.set('status', state.status);
    if (state.starred) p.set('starred', '1');
    let r;
    try {
      r = await json(`/ops/batches/${batchId}/results?${p}`);
    } catch (e) {
      return clear(table, h('p.bad', e.message));
    }
    const b = r.batch;
    active = ['validating', 'in_progress', 'finalizing', 'cancelling'].includes(b.status);
    clear(title, 'Results of ', h('span.mono', b.id), ' ', statusBadge(b.status));
    clear(
      meta,
      `${b.model ?? '–'} · ${b.endpoint} · ${fmt.int(b.request_counts.completed)} completed, ${fmt.int(b.request_counts.failed)} failed of ${fmt.int(b.request_counts.total)}`,
    );
    table.dataset.total = String(r.total);
    clear(
      table,
      r.data.length === 0
        ? h('p.muted', state.q || state.status || state.starred ? 'Nothing matches these filters.' : 'No results yet.')
        : h(
            'table.results',
            h(
              'thead',
              h(
                'tr',
                h('th', '★'),
                h('th', 'custom_id'),
                h('th.half', 'Input'),
                h('th.half', 'Output'),
                h('th.num', { title: 'prompt tokens → completion tokens' }, 'Tokens in → out'),
                h('th.num', 'Latency'),
              ),
            ),
            h(
              'tbody',
              r.data.map((row) => resultRow(batchId, row)),
            ),
          ),
    );
    clear(
      pager,
      h(
        'span.muted',
        r.total === 0 ? '' : `${fmt.int(r.offset + 1)}–${fmt.int(r.offset + r.data.length)} of ${fmt.int(r.total)}`,
      ),
      h(
        'button',
        {
          type: 'button',
          disabled: state.offset === 0 || undefined,
          onclick: () => ((state.offset = Math.max(0, state.offset - PAGE)), load()),
        },
        '← Previous',
      ),
      h(
        'button',
        { type: 'button', disabled: !r.has_more || undefined, onclick: () => ((state.offset += PAGE), load()) },
        'Next →',
      ),
    );
  };
  const reload = () => ((state.offset = 0), load());
  // While the batch runs, its rows fill in: reread the page every 3 s until it ends.
  let active = false;
  const timer = setInterval(() => {
    if (active && document.visibilityState === 'visible') void load();
  }, 3000);
  search.addEventListener(
    'input',
    debounce(() => ((state.q = search.value.trim()), reload()), 250),
  );
  status.addEventListener('change', () => ((state.status = status.value), reload()));
  starred.addEventListener('change', () => ((state.starred = starred.checked), reload()));
  void load();
  return () => clearInterval(timer);
}

export function starButton(batchId, row) {
  const btn = h(
    'button.star',
    {
      type: 'button',
      'aria-pressed': String(row.starred),
      title: row.starred ? 'Unstar' : 'Star this answer',
      dataset: { customId: row.custom_id },
    },
    row.starred ? '★' : '☆',
  );
  btn.addEventListener('click', async () => {
    const on = btn.getAttribute('aria-pressed') !== 'true';
    try {
      await json(`/ops/batches/${batchId}/stars/${encodeURIComponent(row.custom_id)}`, {
        method: on ? 'PUT' : 'DELETE',
      });
      btn.setAttribute('aria-pressed', String(on));
      btn.textContent = on ? '★' : '☆';
      btn.title = on ? 'Unstar' : 'Star this answer';
    } catch (e) {
      toast(`Could not ${on ? 'star' : 'unstar'}: ${e.message}`, 'error');
    }
  });
  return btn;
}

export function outputCell(row) {
  if (row.status === 'pending') return h('span.muted', 'not run yet');
  if (row.error) return h('div.err', h('span.tag.bad', row.error.code), ' ', row.error.message);
  return h(
    'div.out',
    row.output ?? h('span.muted', '(empty)'),
    row.finish_reason && row.finish_reason !== 'stop' ? h('span.tag', row.finish_reason) : null,
  );
}

export const tokensText = (row) =>
  row.usage ? `${fmt.int(row.usage.prompt_tokens)} → ${fmt.int(row.usage.completion_tokens)}` : '–';

function resultRow(batchId, row) {
  return h(
    'tr',
    { dataset: { customId: row.custom_id, status: row.status } },
    h('td', starButton(batchId, row)),
    h('td.mono', row.custom_id, h('div.sub', `line ${row.line}`)),
    h('td.half', renderInput(row.input)),
    h('td.half', outputCell(row)),
    h('td.num.nowrap', tokensText(row)),
    h('td.num.nowrap', fmt.ms(row.latency_ms)),
  );
}

export async function exportStarred(batchIds) {
  try {
    await download(`/ops/stars/export?batch_ids=${encodeURIComponent(batchIds)}`, 'starred.jsonl');
  } catch (e) {
    toast(`Export failed: ${e.message}`, 'error');
  }
}
