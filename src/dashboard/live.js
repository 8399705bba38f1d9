// The live state the views draw: batches (from /ops/batches, then kept current by the
// /ops/events stream) and the fleet (workers, engines, GPUs, errors). Without the operator API
// it falls back to polling /v1/batches.
import { followEvents, json } from './api.js';

const ACTIVE = new Set(['validating', 'in_progress', 'finalizing', 'cancelling']);
const listeners = new Set();
let opsAvailable = true;
let started = false;

export const live = {
  /** id → batch (OpsBatch shape; OpenAI batch objects merged in). */
  batches: new Map(),
  selected: null,
  connected: false,
  fleet: { workers: [], engines: [], gpus: [], errors: [] },

  subscribe(fn) {
    listeners.add(fn);
    return () => listeners.delete(fn);
  },
  upsert(b) {
    this.batches.set(b.id, { ...(this.batches.get(b.id) ?? {}), ...b });
    changed();
  },
  batchList() {
    return [...this.batches.values()].sort((a, b) => b.created_at - a.created_at || (a.id < b.id ? 1 : -1));
  },

  async refreshBatches() {
    try {
      if (opsAvailable) {
        const r = await json('/ops/batches?status=all&limit=200');
        for (const b of r.data) this.batches.set(b.id, { ...(this.batches.get(b.id) ?? {}), ...b });
      } else {
        const r = await json('/v1/batches?limit=100');
        for (const b of r.data) this.batches.set(b.id, { ...(this.batches.get(b.id) ?? {}), ...b });
      }
      changed();
    } catch (e) {
      if (e.status === 404 && opsAvailable) {
        opsAvailable = false;
        return this.refreshBatches();
      }
    }
  },

  async refreshFleet() {
    if (!opsAvailable) {
      this.fleet = { workers: null, engines: [], gpus: [], errors: [] };
      return changed();
    }
    const get = (p) =>
      json(p).then(
        (r) => r.data,
        () => undefined,
      );
    const [workers, engines, gpus, errors] = await Promise.all([
      get('/ops/workers'),
      get('/ops/engines'),
      get('/ops/gpus'),
      get('/ops/errors?limit=20'),
    ]);
    this.fleet = {
      workers: workers === undefined ? null : workers,
      engines: engines ?? [],
      gpus: gpus ?? [],
      errors: errors ?? [],
    };
    changed();
  },

  start() {
    if (started) return;
    started = true;
    void this.refreshBatches();
    followEvents(
      '/ops/events',
      (event, data) => {
        if (event === 'batches') onActiveBatches(Array.isArray(data) ? data : (data.data ?? []));
        else if (event === 'engines') {
          this.fleet.engines = Array.isArray(data) ? data : (data.data ?? []);
          changed();
        }
      },
      (connected, err) => {
        this.connected = connected;
        if (err?.status === 404) opsAvailable = false;
        setLive(connected ? 'live' : opsAvailable ? 'reconnecting' : 'polling');
        if (connected) void this.refreshBatches();
      },
    );
    // The stream carries active batches; this catches what it cannot (new fleet readings, and
    // polling when the server has no operator API).
    setInterval(() => {
      if (!opsAvailable || !this.connected) void this.refreshBatches();
      if (document.querySelector('#fleet')) void this.refreshFleet();
    }, 3000);
  },
};

/** The stream lists the active batches: a batch that left the list has ended, so read its final state. */
function onActiveBatches(list) {
  const now = new Set(list.map((b) => b.id));
  let ended = false;
  for (const b of live.batches.values()) if (ACTIVE.has(b.status) && !now.has(b.id)) ended = true;
  for (const b of list) live.batches.set(b.id, { ...(live.batches.get(b.id) ?? {}), ...b });
  changed();
  if (ended) void live.refreshBatches();
}

function changed() {
  for (const fn of listeners) fn();
}

function setLive(state) {
  const el = document.getElementById('live');
  if (!el) return;
  el.textContent = state;
  el.dataset.state = state;
}
