/**
 * OpenAI `stop` strings over streamed text. Text that could be the start of a stop string is
 * held back until it is known not to be one, so no emitted text ever contains (part of) a stop.
 */
export class StopMatcher {
  private held = '';
  private readonly maxLen: number;

  constructor(
    private readonly stops: readonly string[],
    /** vLLM's include_stop_str_in_output. */
    private readonly includeStop = false,
  ) {
    this.maxLen = stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  /** Adds generated text; returns what may be emitted now and the stop string hit, if any. */
  push(text: string): { emit: string; stop: string | null } {
    if (this.maxLen === 0) return { emit: text, stop: null };
    const buf = this.held + text;
    let at = -1;
    let hit: string | null = null;
    for (const s of this.stops) {
      if (s === '') continue;
      const i = buf.indexOf(s);
      if (i !== -1 && (at === -1 || i < at || (i === at && s.length > hit!.length))) {
        at = i;
        hit = s;
      }
    }
    if (hit !== null) {
      this.held = '';
      return { emit: buf.slice(0, this.includeStop ? at + hit.length : at), stop: hit };
    }
    const keep = this.heldSuffix(buf);
    this.held = buf.slice(buf.length - keep);
    return { emit: buf.slice(0, buf.length - keep), stop: null };
  }

  /** The end of generation: whatever was held back is plain text after all. */
  flush(): string {
    const rest = this.held;
    this.held = '';
    return rest;
  }

  /** Length of the longest suffix of `buf` that is a proper prefix of some stop string. */
  private heldSuffix(buf: string): number {
    for (let k = Math.min(this.maxLen - 1, buf.length); k > 0; k--) {
      const tail = buf.slice(buf.length - k);
      if (this.stops.some((s) => s.length > k && s.startsWith(tail))) return k;
    }
    return 0;
  }
}
