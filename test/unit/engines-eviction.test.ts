import { describe, expect, it } from 'vitest';
import { selectEvictions, type EvictionCandidate } from '../../src/engines/eviction.js';

const e = (model: string, state: EvictionCandidate['state'], lastUsed: number): EvictionCandidate => ({
  model,
  state,
  lastUsed,
});

describe('selectEvictions', () => {
  it('stops nothing when nothing is loaded', () => {
    expect(selectEvictions('a', [e('a', 'stopped', 0), e('b', 'stopped', 0)])).toEqual([]);
  });

  it('stops the loaded model to make room for another when one fits', () => {
    expect(selectEvictions('b', [e('a', 'ready', 10), e('b', 'stopped', 0)])).toEqual(['a']);
  });

  it('never returns the target, even when it is loaded', () => {
    expect(selectEvictions('a', [e('a', 'ready', 1)])).toEqual([]);
    expect(selectEvictions('a', [e('a', 'ready', 1), e('b', 'ready', 5)], 2)).toEqual([]);
  });

  it('stops least recently used first, only as many as needed', () => {
    const engines = [e('a', 'ready', 30), e('b', 'ready', 10), e('c', 'ready', 20), e('d', 'stopped', 0)];
    expect(selectEvictions('d', engines, 3)).toEqual(['b']);
    expect(selectEvictions('d', engines, 2)).toEqual(['b', 'c']);
    expect(selectEvictions('d', engines, 1)).toEqual(['b', 'c', 'a']);
  });

  it('ignores engines that hold no memory (stopped, failed, shutdown)', () => {
    expect(selectEvictions('x', [e('a', 'failed', 1), e('b', 'shutdown', 1), e('c', 'stopped', 1)])).toEqual([]);
  });

  it('counts starting engines, and counts but never re-picks stopping ones', () => {
    expect(selectEvictions('x', [e('a', 'starting', 5)])).toEqual(['a']);
    expect(selectEvictions('x', [e('a', 'stopping', 1), e('b', 'ready', 9)], 2)).toEqual(['b']);
  });

  it('treats maxLoaded below 1 as 1 and breaks ties by model id', () => {
    expect(selectEvictions('x', [e('b', 'ready', 1), e('a', 'ready', 1)], 0)).toEqual(['a', 'b']);
  });
});
