// Small DOM helpers. Text always goes in as text nodes (never innerHTML): results and inputs
// are user data.

/** h('div.card#id', {onclick, title}, child, ...): an element; strings become text nodes. */
export function h(spec, attrs, ...children) {
  if (attrs === null || typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  const [, tag = 'div', rest = ''] = /^([a-z0-9]*)(.*)$/.exec(spec);
  const el = document.createElement(tag || 'div');
  for (const m of rest.matchAll(/([.#])([\w-]+)/g)) {
    if (m[1] === '.') el.classList.add(m[2]);
    else el.id = m[2];
  }
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function toast(message, kind = 'info') {
  const t = h(`div.toast.${kind}`, { role: kind === 'error' ? 'alert' : 'status' }, message);
  document.getElementById('toasts').append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 4000);
}

export const fmt = {
  int: (n) => (n === null || n === undefined ? '–' : Math.round(n).toLocaleString('en-US')),
  num: (n, d = 1) =>
    n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US', { maximumFractionDigits: d }),
  ms: (n) => (n === null || n === undefined ? '–' : n >= 10_000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n)} ms`),
  duration(s) {
    if (s === null || s === undefined) return '–';
    if (s < 60) return `${Math.round(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  },
  ago(unixS) {
    if (!unixS) return '–';
    const s = Date.now() / 1000 - unixS;
    if (s < 60) return 'just now';
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86_400) return `${Math.round(s / 3600)} h ago`;
    return new Date(unixS * 1000).toISOString().slice(0, 10);
  },
  when: (unixS) => (unixS ? new Date(unixS * 1000).toISOString().replace('T', ' ').slice(0, 19) : '–'),
  pct: (x) => `${Math.round((x ?? 0) * 100)}%`,
};

export function statusBadge(status) {
  return h(`span.badge.s-${status}`, status.replace('_', ' '));
}

export function progressBar(fraction, status) {
  const fill = h(`div.fill.s-${status}`);
  fill.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  return h(
    'div.progress',
    { role: 'progressbar', 'aria-valuenow': Math.round(fraction * 100), 'aria-valuemin': 0, 'aria-valuemax': 100 },
    fill,
  );
}

/** A chat input as role-labelled blocks; a prompt or embedding input as one block. */
export function renderInput(input) {
  if (input === null || input === undefined) return h('span.muted', 'input not available');
  if (typeof input === 'string') return h('div.msg', h('span.role', 'prompt'), h('span.text', input));
  return h(
    'div.msgs',
    input.map((m) =>
      m && typeof m === 'object' && 'role' in m
        ? h(
            `div.msg.r-${String(m.role).replace(/[^a-z]/g, '')}`,
            h('span.role', m.role),
            h('span.text', contentText(m.content)),
          )
        : h('div.msg', h('span.text', typeof m === 'string' ? m : JSON.stringify(m))),
    ),
  );
}

function contentText(c) {
  if (typeof c === 'string') return c;
  if (Array.isArray(c))
    return c.map((p) => (p && typeof p.text === 'string' ? p.text : p && p.type ? `[${p.type}]` : '')).join(' ');
  return c === null || c === undefined ? '' : JSON.stringify(c);
}

export function debounce(fn, ms) {
  let t;
  return (...a) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...a), ms);
  };
}
