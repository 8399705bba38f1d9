/** What the eviction policy needs to know about one engine. */
export interface EvictionCandidate {
  model: string;
  /** 'sleeping' (a vLLM engine in sleep mode) holds little GPU memory: not loaded. */
  state: 'stopped' | 'starting' | 'ready' | 'sleeping' | 'stopping' | 'failed' | 'shutdown';
  /** ms epoch of the last acquire/release (or of the start). */
  lastUsed: number;
}

/** States whose engine holds (or is about to hold) GPU memory. */
const LOADED = new Set<EvictionCandidate['state']>(['starting', 'ready', 'stopping']);

/**
 * The engines to stop so `target` fits: with `maxLoaded` engines allowed at once, stop the
 * least recently used other loaded engines until the target plus the rest fit. Never returns
 * the target, and never an engine that holds no memory. Ties break by model id, so the
 * answer is deterministic. Pure: the ModelManager carries the decision out (llama-swap Swapper).
 */
export function selectEvictions(target: string, engines: readonly EvictionCandidate[], maxLoaded = 1): string[] {
  const limit = Math.max(1, Math.floor(maxLoaded));
  const others = engines.filter((e) => e.model !== target && LOADED.has(e.state));
  // 'stopping' engines are already on their way out: they count against memory, but are not chosen again.
  const choosable = others.filter((e) => e.state !== 'stopping');
  const excess = others.length + 1 - limit;
  if (excess <= 0) return [];
  return [...choosable]
    .sort((a, b) => a.lastUsed - b.lastUsed || (a.model < b.model ? -1 : a.model > b.model ? 1 : 0))
    .slice(0, excess)
    .map((e) => e.model);
}
