// HTTP and SSE calls of the dashboard. Every call carries the API key from localStorage
// (when one was given); a 401 asks for a key once and retries.

const KEY = 'batchwright.apiKey';
let asking = null;

export class HttpError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export function apiKey() {
  return localStorage.getItem(KEY);
}

/** Shows the key dialog; resolves with the key, or null when cancelled. One dialog at a time. */
export function askForKey() {
  if (asking) return asking;
  const dialog = document.getElementById('key-dialog');
  const input = document.getElementById('key-input');
  input.value = '';
  asking = new Promise((resolve) => {
    const done = (key) => {
      dialog.close();
      asking = null;
      if (key) localStorage.setItem(KEY, key);
      resolve(key);
    };
    document.getElementById('key-form').onsubmit = (e) => {
      e.preventDefault();
      done(input.value.trim() || null);
    };
    document.getElementById('key-cancel').onclick = () => done(null);
    dialog.showModal();
  });
  return asking;
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, authorization: `Bearer ${key}` } : extra;
}

/** fetch with the key; on 401 asks for a key once and retries. Returns the Response (ok or not). */
export async function call(path, init = {}) {
  let res = await fetch(path, { ...init, headers: headers(init.headers) });
  if (res.status === 401 && (await askForKey())) res = await fetch(path, { ...init, headers: headers(init.headers) });
  return res;
}

/** JSON call; throws HttpError with the server's message on a non-2xx answer. */
export async function json(path, init = {}) {
  const body = init.body !== undefined && !(init.body instanceof FormData) ? JSON.stringify(init.body) : init.body;
  const h = body !== undefined && !(body instanceof FormData) ? { 'content-type': 'application/json' } : {};
  const res = await call(path, { ...init, body, headers: { ...h, ...init.headers } });
  const text = await res.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!res.ok) throw new HttpError(res.status, parsed);
  return parsed;
}

/** Downloads a URL of this server (with the key) as a file named `name`. */
export async function download(path, name) {
  const res = await call(path);
  if (!res.ok) {
    const body = await res.json().catch(() => null);
    throw new HttpError(res.status, body);
  }
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * Follows a server-sent event stream with fetch (EventSource cannot send an Authorization
 * header), reconnecting after a drop. `onEvent(name, data)`; `onState(connected)`.
 * Returns a function that stops it.
 */
export function followEvents(path, onEvent, onState) {
  let stopped = false;
  let ctrl = null;
  const run = async () => {
    while (!stopped) {
      ctrl = new AbortController();
      try {
        const res = await call(path, { signal: ctrl.signal, headers: { accept: 'text/event-stream' } });
        if (!res.ok || !res.body) throw new HttpError(res.status, null);
        onState(true);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let end;
          while ((end = buf.indexOf('\n\n')) !== -1) {
            const block = buf.slice(0, end);
            buf = buf.slice(end + 2);
            let event = 'message';
            const data = [];
            for (const line of block.split('\n')) {
              if (line.startsWith('event:')) event = line.slice(6).trim();
              else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
            }
            if (data.length === 0) continue;
            try {
              onEvent(event, JSON.parse(data.join('\n')));
            } catch (e) {
              console.warn('bad event', e);
            }
          }
        }
      } catch (e) {
        if (stopped) return;
        // A 404 means this server has no operator API: callers fall back to polling.
        if (e instanceof HttpError && e.status === 404) {
          onState(false, e);
          return;
        }
      }
      onState(false);
      await new Promise((r) => setTimeout(r, 2000));
    }
  };
  void run();
  return () => {
    stopped = true;
    ctrl?.abort();
  };
}
