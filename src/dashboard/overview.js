// Overview: submit a batch by drag and drop, batches with live progress, the fleet, errors.
import { HttpError, download, json } from './api.js';
import { clear, fmt, h, progressBar, statusBadge, toast } from './ui.js';
import { live } from './live.js';

const ACTIVE = new Set(['validating', 'in_progress', 'finalizing', 'cancelling']);
const CANCELLABLE = new Set(['validating', 'in_progress']);

export function overviewView(root) {
  const selected = new Set();
  const drop = dropZone();
  const batchesBox = h(
    'section.card.wide',
    h('div.card-head', h('h2', 'Batches'), h('div.actions', compareButton())),
    h('div#batches-table'),
  );
  const fleetBox = h('section.card', h('h2', 'Workers and engines'), h('div#fleet'));
  const gpuBox = h('section.card', h('h2', 'GPUs'), h('div#gpus'));
  const errorsBox = h('section.card.wide', h('h2', 'Recent errors'), h('div#errors'));
  const detail = h('section.card.wide#batch-detail', { hidden: true });
  clear(root, h('div.grid', drop.el, detail, batchesBox, fleetBox, gpuBox, errorsBox));

  function compareButton() {
    return h(
      'button#compare-selected',
      { type: 'button', disabled: true, onclick: () => (location.hash = `#/compare/${[...selected].join(',')}`) },
      'Compare selected',
    );
  }

  const renderBatches = () => {
    const list = live.batchList();
    const box = document.getElementById('batches-table');
    if (!box) return;
    const btn = document.getElementById('compare-selected');
    for (const id of selected) if (!live.batches.has(id)) selected.delete(id);
    btn.disabled = selected.size < 2;
    btn.textContent = selected.size >= 2 ? `Compare ${selected.size} batches` : 'Compare selected (2+)';
    if (list.length === 0) return clear(box, h('p.muted', 'No batches yet. Drop a JSONL file above to start one.'));
    // The table is redrawn on every live update: keep the keyboard focus where it was.
    const active = document.activeElement;
    const focusRow = box.contains(active) ? active.closest('tr[data-batch]')?.dataset.batch : undefined;
    const focusCheck = focusRow !== undefined && active.tagName === 'INPUT';
    clear(
      box,
      h(
        'table.batches',
        h(
          'thead',
          h(
            'tr',
            h('th', ''),
            h('th', 'Batch'),
            h('th', 'Model'),
            h('th', 'Status'),
            h('th.grow', 'Progress'),
            h('th.num', 'Done'),
            h('th.num', 'Failed'),
            h('th.num', 'Rate'),
            h('th.num', 'ETA'),
            h('th', 'Created'),
          ),
        ),
        h(
          'tbody',
          list.map((b) => {
            const c = b.request_counts ?? { total: 0, completed: 0, failed: 0 };
            const progress = b.progress ?? (c.total ? (c.completed + c.failed) / c.total : 0);
            const check = h('input', {
              type: 'checkbox',
              'aria-label': `select ${b.id} to compare`,
              checked: selected.has(b.id) || undefined,
              onclick: (e) => e.stopPropagation(),
              onchange: (e) => {
                if (e.target.checked) selected.add(b.id);
                else selected.delete(b.id);
                renderBatches();
              },
            });
            return h(
              'tr',
              {
                dataset: { batch: b.id, status: b.status },
                class: live.selected === b.id ? 'sel' : undefined,
                tabindex: 0,
                onclick: () => showDetail(b.id),
                onkeydown: (e) => e.key === 'Enter' && e.target === e.currentTarget && showDetail(b.id),
              },
              h('td', check),
              h('td.mono', b.id, b.metadata?.name ? h('div.sub', b.metadata.name) : null),
              h('td', b.model ?? '–'),
              h('td', statusBadge(b.status)),
              h(
                'td.grow',
                progressBar(progress, b.status),
                b.waiting_reason ? h('div.sub.warn', b.waiting_reason) : null,
              ),
              h('td.num', `${fmt.int(c.completed)} / ${fmt.int(c.total)}`),
              h('td.num', c.failed ? h('span.bad', fmt.int(c.failed)) : '0'),
              h('td.num', ACTIVE.has(b.status) && b.throughput_rps ? `${fmt.num(b.throughput_rps)}/s` : '–'),
              h('td.num', ACTIVE.has(b.status) ? fmt.duration(b.eta_s) : '–'),
              h('td', fmt.ago(b.created_at)),
            );
          }),
        ),
      ),
    );
    if (focusRow !== undefined) {
      const tr = [...box.querySelectorAll('tr[data-batch]')].find((r) => r.dataset.batch === focusRow);
      (focusCheck ? tr?.querySelector('input') : tr)?.focus();
    }
  };

  /** What the detail panel shows, to redraw it when the live state of that batch moves. */
  let shown = null;
  let refreshing = null;
  const stamp = (b) =>
    `${b.status}:${b.request_counts?.completed}:${b.request_counts?.failed}:${b.request_counts?.total}`;
  const followDetail = () => {
    const b = shown && live.batches.get(shown.id);
    if (!b || detail.hidden || stamp(b) === shown.stamp || refreshing) return;
    // At most two reads a second while a batch runs: the panel's counts, not every event.
    refreshing = setTimeout(() => {
      refreshing = null;
      if (shown && !detail.hidden) void showDetail(shown.id, { keepSelection: true });
    }, 500);
  };

  async function showDetail(id, { keepSelection = false } = {}) {
    if (!keepSelection) {
      live.selected = id;
      renderBatches();
    }
    let b;
    try {
      b = await json(`/v1/batches/${id}`);
    } catch (e) {
      return toast(e.message, 'error');
    }
    if (keepSelection && live.selected !== id) return;
    shown = { id, stamp: stamp(b) };
    // The row shows the newer of the two readings (the event stream ticks once a second).
    const cur = live.batches.get(id);
    const doneOf = (x) => (x?.request_counts ? x.request_counts.completed + x.request_counts.failed : -1);
    if (!cur || doneOf(b) > doneOf(cur) || cur.status !== b.status)
      live.upsert({
        id,
        status: b.status,
        request_counts: b.request_counts,
        model: b.model,
        ...(b.request_counts.total > 0 && { progress: doneOf(b) / b.request_counts.total }),
      });
    const errors = b.errors?.data ?? [];
    const buttons = [
      h('a.button', { href: `#/results/${b.id}` }, 'Results'),
      b.output_file_id &&
        h(
          'button',
          {
            type: 'button',
            dataset: { action: 'download-output' },
            onclick: () => dl(b.output_file_id, `${b.id}-output.jsonl`),
          },
          'Download output',
        ),
      b.error_file_id &&
        h(
          'button',
          {
            type: 'button',
            dataset: { action: 'download-errors' },
            onclick: () => dl(b.error_file_id, `${b.id}-errors.jsonl`),
          },
          'Download errors',
        ),
      CANCELLABLE.has(b.status) &&
        h(
          'button.danger',
          { type: 'button', dataset: { action: 'cancel' }, onclick: () => cancel(b.id) },
          'Cancel batch',
        ),
      h(
        'button.link',
        {
          type: 'button',
          onclick: () => ((detail.hidden = true), (live.selected = null), (shown = null), renderBatches()),
        },
        'Close',
      ),
    ];
    const c = b.request_counts;
    clear(
      detail,
      h(
        'div.card-head',
        h('h2', 'Batch ', h('span.mono', b.id), ' ', statusBadge(b.status)),
        h('div.actions', buttons),
      ),
      h(
        'dl.facts',
        fact('Model', b.model ?? '–'),
        fact('Endpoint', b.endpoint),
        fact('Requests', `${fmt.int(c.completed)} completed, ${fmt.int(c.failed)} failed of ${fmt.int(c.total)}`),
        fact('Tokens', b.usage ? `${fmt.int(b.usage.input_tokens)} in, ${fmt.int(b.usage.output_tokens)} out` : '–'),
        fact('Created', fmt.when(b.created_at)),
        fact('Finished', fmt.when(b.completed_at ?? b.failed_at ?? b.cancelled_at ?? b.expired_at)),
        fact('Input file', b.input_file_id),
      ),
      errors.length > 0 ? validationErrors(errors) : null,
    );
    detail.hidden = false;
  }

  async function dl(fileId, name) {
    try {
      await download(`/v1/files/${fileId}/content`, name);
    } catch (e) {
      toast(`Download failed: ${e.message}`, 'error');
    }
  }

  async function cancel(id) {
    try {
      const b = await json(`/v1/batches/${id}/cancel`, { method: 'POST' });
      toast(`Batch ${id} is ${b.status.replace('_', ' ')}`);
      live.upsert(b);
      await showDetail(id);
    } catch (e) {
      toast(`Cancel failed: ${e.message}`, 'error');
    }
  }

  /** Watches a submitted batch until validation is over, then shows it (with its errors, if any). */
  async function watchSubmitted(id) {
    for (let i = 0; i < 600; i++) {
      const b = await json(`/v1/batches/${id}`).catch(() => null);
      if (b && b.status !== 'validating') {
        live.upsert(b);
        if (b.status !== 'failed')
          drop.showMessage([
            'Batch ',
            h('span.mono', id),
            ` accepted: ${b.request_counts.total} requests, ${b.status.replace('_', ' ')}.`,
          ]);
        if (b.status === 'failed') {
          drop.showErrors(b.errors?.data ?? [], `Batch ${id} failed validation`);
          await showDetail(id);
        }
        return;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  drop.onSubmitted = (batch) => {
    live.upsert(batch);
    void showDetail(batch.id);
    void watchSubmitted(batch.id);
  };

  const renderFleet = () => {
    const el = document.getElementById('fleet');
    if (!el) return;
    const { workers, engines } = live.fleet;
    if (workers === null) return clear(el, h('p.muted', 'The operator API is not available on this server.'));
    clear(
      el,
      workers.length === 0
        ? h('p.muted', 'No live worker. Start one with npm run start:worker.')
        : h(
            'table',
            h(
              'thead',
              h('tr', h('th', 'Worker'), h('th', 'Model'), h('th', 'Engine'), h('th', 'Since'), h('th', 'Last error')),
            ),
            h(
              'tbody',
              workers.flatMap((w) => {
                const es = engines.filter((e) => e.worker_id === w.id);
                if (es.length === 0)
                  return [
                    h(
                      'tr',
                      h('td.mono', w.id, w.alive === false ? h('span.bad', ' (gone)') : null),
                      h('td', w.active_model ?? '–'),
                      h('td.muted', 'no engine'),
                      h('td', ''),
                      h('td', ''),
                    ),
                  ];
                return es.map((e) =>
                  h(
                    'tr',
                    { dataset: { engine: `${w.id}:${e.model}` } },
                    h('td.mono', w.id),
                    h('td', e.model, e.model === w.active_model ? h('span.tag', 'active') : null),
                    h('td', statusBadge(e.state)),
                    h('td', e.since ? fmt.ago(e.since > 1e11 ? e.since / 1000 : e.since) : '–'),
                    h('td.sub', e.detail?.text ?? e.last_error ?? ''),
                  ),
                );
              }),
            ),
          ),
    );
    const g = document.getElementById('gpus');
    const gpus = live.fleet.gpus ?? [];
    clear(
      g,
      gpus.length === 0
        ? h('p.muted', 'No GPU readings (workers without nvidia-smi report none).')
        : h(
            'table',
            h(
              'thead',
              h(
                'tr',
                h('th', 'Worker'),
                h('th', 'GPU'),
                h('th.num', 'Util'),
                h('th.grow', 'Memory'),
                h('th.num', 'Temp'),
              ),
            ),
            h(
              'tbody',
              gpus.map((x) =>
                h(
                  'tr',
                  h('td.mono', x.worker_id),
                  h('td', `${x.index}: ${x.name}`),
                  h('td.num', x.utilization_pct === null ? '–' : `${x.utilization_pct}%`),
                  h(
                    'td.grow',
                    progressBar(x.memory_total_mib ? x.memory_used_mib / x.memory_total_mib : 0, 'in_progress'),
                    h('div.sub', `${fmt.int(x.memory_used_mib)} / ${fmt.int(x.memory_total_mib)} MiB`),
                  ),
                  h('td.num', x.temperature_c === null ? '–' : `${x.temperature_c} °C`),
                ),
              ),
            ),
          ),
    );
    const er = document.getElementById('errors');
    const errs = live.fleet.errors ?? [];
    clear(
      er,
      errs.length === 0
        ? h('p.muted', 'No recent errors.')
        : h(
            'table',
            h(
              'tbody',
              errs
                .slice(0, 20)
                .map((x) =>
                  h(
                    'tr',
                    h('td.nowrap', fmt.when(x.at > 1e11 ? x.at / 1000 : x.at)),
                    h('td', h('span.tag', x.source)),
                    h('td.sub', x.message),
                  ),
                ),
            ),
          ),
    );
  };

  const off = live.subscribe(() => {
    renderBatches();
    renderFleet();
    followDetail();
  });
  renderBatches();
  renderFleet();
  void live.refreshFleet();
  return off;
}

function fact(k, v) {
  return [h('dt', k), h('dd', v)];
}

function validationErrors(errors) {
  return h(
    'div.validation',
    h('h3', `${errors.length} problem${errors.length === 1 ? '' : 's'} in the input file`),
    h(
      'ul',
      errors.slice(0, 50).map((e) => h('li', e.line ? h('span.tag', `line ${e.line}`) : null, ' ', e.message)),
    ),
  );
}

/** The drop target: upload the file (POST /v1/files), then create the batch (POST /v1/batches). */
function dropZone() {
  const input = h('input#file-input', {
    type: 'file',
    accept: '.jsonl,.json,application/jsonl,text/plain',
    hidden: true,
  });
  const status = h('div.drop-status');
  const el = h(
    'section.card.wide.drop#drop',
    { tabindex: 0, 'aria-label': 'Drop a JSONL batch file here' },
    h(
      'div.drop-inner',
      h('strong', 'Drop a JSONL batch file here'),
      h('span.muted', ' or '),
      h('button.link', { type: 'button', onclick: () => input.click() }, 'choose a file'),
      h(
        'div.sub',
        'One request per line: {"custom_id", "method": "POST", "url", "body"}. The endpoint is read from the first line.',
      ),
    ),
    input,
    status,
  );
  const zone = {
    el,
    onSubmitted: () => undefined,
    showMessage(text) {
      clear(status, h('p.ok', text));
    },
    showErrors(errors, title) {
      clear(
        status,
        h(
          'div.validation',
          h('h3', title),
          h(
            'ul',
            errors.slice(0, 50).map((e) => h('li', e.line ? h('span.tag', `line ${e.line}`) : null, ' ', e.message)),
          ),
        ),
      );
    },
  };
  const submit = async (file) => {
    if (!file) return;
    clear(status, h('p', `Uploading ${file.name} (${fmt.int(file.size)} bytes)…`));
    try {
      const text = await file.slice(0, 64 * 1024).text();
      const endpoint = endpointOf(text);
      const form = new FormData();
      form.append('purpose', 'batch');
      form.append('file', file, file.name);
      const uploaded = await json('/v1/files', { method: 'POST', body: form });
      const batch = await json('/v1/batches', {
        method: 'POST',
        body: {
          input_file_id: uploaded.id,
          endpoint,
          completion_window: '24h',
          metadata: { name: file.name.slice(0, 500) },
        },
      });
      clear(status, h('p.ok', 'Batch ', h('span.mono', batch.id), ` created from ${file.name}; validating…`));
      Object.assign(status.dataset, { batch: batch.id, file: file.name });
      zone.onSubmitted(batch);
    } catch (e) {
      const param = e instanceof HttpError && e.body?.error?.param ? ` (${e.body.error.param})` : '';
      clear(status, h('div.validation', h('h3', `Could not submit ${file.name}`), h('p', e.message + param)));
    }
  };
  el.addEventListener('dragover', (e) => {
    e.preventDefault();
    el.classList.add('over');
  });
  el.addEventListener('dragleave', () => el.classList.remove('over'));
  el.addEventListener('drop', (e) => {
    e.preventDefault();
    el.classList.remove('over');
    void submit(e.dataTransfer?.files?.[0]);
  });
  input.addEventListener('change', () => void submit(input.files?.[0]));
  return zone;
}

function endpointOf(text) {
  const first = text.split('\n').find((l) => l.trim());
  try {
    const url = JSON.parse(first ?? '').url;
    if (typeof url === 'string' && url.startsWith('/v1/')) return url;
  } catch {
    // Not JSON (or longer than what was read): the server's validation reports it line by line.
    const m = /"url"\s*:\s*"(\/v1\/[a-z/]+)"/.exec(first ?? '');
    if (m) return m[1];
  }
  return '/v1/chat/completions';
}
