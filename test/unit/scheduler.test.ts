import { describe, expect, it } from 'vitest';
import { pickModel, type QueueLoad, type SchedulePolicy } from '../../src/worker/scheduler.js';

const load = (model: string, o: Partial<QueueLoad> = {}): QueueLoad => ({
  model,
  waiting: 0,
  active: 0,
  oldestWaitingAt: null,
  interactiveWaiting: 0,
  interactiveInflight: 0,
  interactiveSince: null,
  ...o,
});
const wait: SchedulePolicy = { switchAfterMs: 60_000, interactive: 'wait', interactiveMaxWaitMs: 10_000 };
const NOW = 1_000_000;

describe('pickModel', () => {
  it('keeps the loaded model while it has batch work, even when another model waits', () => {
    const loads = [
      load('a', { waiting: 3, oldestWaitingAt: NOW - 1000 }),
      load('b', { waiting: 1, oldestWaitingAt: NOW - 5000 }),
    ];
    expect(pickModel(loads, 'a', NOW - 1000, NOW, wait)).toBe('a');
  });

  it('switches to the starved model once it waited longer than switchAfterMs', () => {
    const loads = [
      load('a', { waiting: 3, oldestWaitingAt: NOW - 1000 }),
      load('b', { waiting: 1, oldestWaitingAt: NOW - 61_000 }),
    ];
    expect(pickModel(loads, 'a', NOW - 120_000, NOW, wait)).toBe('b');
    // ...but not before the active model has itself had that long
    expect(pickModel(loads, 'a', NOW - 1000, NOW, wait)).toBe('a');
  });

  it('takes the model whose work waited longest when the active one is idle', () => {
    const loads = [
      load('a'),
      load('b', { waiting: 1, oldestWaitingAt: NOW - 10 }),
      load('c', { interactiveWaiting: 1, interactiveSince: NOW - 50 }),
    ];
    expect(pickModel(loads, 'a', NOW, NOW, wait)).toBe('c');
  });

  it('starts serving when nothing is loaded, and stays put with no work', () => {
    expect(pickModel([load('a'), load('b', { active: 1 })], null, 0, NOW, wait)).toBe('b');
    expect(pickModel([load('a'), load('b')], 'a', 0, NOW, wait)).toBe('a');
    expect(pickModel([load('a'), load('b')], null, 0, NOW, wait)).toBe(null);
  });

  it('never leaves a model with interactive requests in flight', () => {
    const loads = [
      load('a', { interactiveInflight: 1 }),
      load('b', { interactiveWaiting: 5, interactiveSince: NOW - 999_999 }),
    ];
    expect(pickModel(loads, 'a', 0, NOW, { ...wait, interactive: 'preempt' })).toBe('a');
  });

  it('interactive demand for another model: preempt swaps at once, wait swaps after interactiveMaxWaitMs', () => {
    const busy = load('a', { waiting: 10, oldestWaitingAt: NOW - 100 });
    const fresh = [busy, load('b', { interactiveWaiting: 1, interactiveSince: NOW - 100 })];
    expect(pickModel(fresh, 'a', NOW - 100, NOW, wait)).toBe('a');
    expect(pickModel(fresh, 'a', NOW - 100, NOW, { ...wait, interactive: 'preempt' })).toBe('b');
    const old = [busy, load('b', { interactiveWaiting: 1, interactiveSince: NOW - 10_001 })];
    expect(pickModel(old, 'a', NOW - 100, NOW, wait)).toBe('b');
  });
});
