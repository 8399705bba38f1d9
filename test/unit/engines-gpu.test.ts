import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { memoryShortfall, parseNvidiaSmi, queryGpus, visibleGpus } from '../../src/engines/gpu.js';

// Fixtures follow nvidia-smi's csv,noheader,nounits format and its failure messages; they
// were written by hand (no GPU machine was available to record them).
const fixture = (name: string) =>
  readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/nvidia-smi', name), 'utf8');

describe('nvidia-smi parsing', () => {
  it('reads one GPU with its memory, utilization and temperature, stamped with the reading time', () => {
    const r = parseNvidiaSmi(fixture('one-gpu-busy.csv'), 1234);
    expect(r).toEqual({
      ok: true,
      gpus: [
        {
          index: 0,
          uuid: 'GPU-1b2c3d4e-aaaa-bbbb-cccc-111111111111',
          name: 'NVIDIA GeForce RTX 4080',
          memoryTotalMiB: 16376,
          memoryUsedMiB: 13410,
          memoryFreeMiB: 2966,
          utilizationPct: 97,
          temperatureC: 71,
          at: 1234,
        },
      ],
    });
  });

  it('reads several GPUs, and [N/A] fields as null', () => {
    const two = parseNvidiaSmi(fixture('two-gpus.csv'), 1);
    expect(two.ok && two.gpus.map((g) => [g.index, g.memoryFreeMiB])).toEqual([
      [0, 81008],
      [1, 10700],
    ]);
    const mig = parseNvidiaSmi(fixture('mig-na.csv'), 1);
    expect(mig.ok && mig.gpus[0]).toMatchObject({ utilizationPct: null, temperatureC: null, memoryFreeMiB: 20083 });
  });

  it('turns driver errors into a reason instead of GPUs', () => {
    expect(parseNvidiaSmi(fixture('driver-error.txt'), 1)).toEqual({
      ok: false,
      reason: expect.stringContaining("couldn't communicate with the NVIDIA driver"),
    });
    expect(parseNvidiaSmi(fixture('no-devices.txt'), 1)).toEqual({
      ok: false,
      reason: 'nvidia-smi: No devices were found',
    });
    expect(parseNvidiaSmi('', 1)).toEqual({ ok: true, gpus: [] });
  });

  it('runs the command: missing binary, failing driver and a working one', async () => {
    expect(await queryGpus('/nonexistent/nvidia-smi')).toEqual({
      ok: false,
      reason: '/nonexistent/nvidia-smi not found: no NVIDIA driver on this machine',
    });
    const dir = mkdtempSync(path.join(tmpdir(), 'bw-smi-'));
    const fake = (name: string, body: string) => {
      const p = path.join(dir, name);
      writeFileSync(p, `#!/bin/sh\n${body}\n`);
      chmodSync(p, 0o755);
      return p;
    };
    const broken = await queryGpus(
      fake('broken', `echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."; exit 9`),
    );
    expect(broken.ok).toBe(false);
    expect(!broken.ok && broken.reason).toContain("couldn't communicate");
    const works = await queryGpus(
      fake(
        'works',
        `cat ${path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/nvidia-smi/two-gpus.csv')}`,
      ),
    );
    expect(works.ok && works.gpus).toHaveLength(2);
  });

  it('selects the GPUs named by CUDA_VISIBLE_DEVICES and reports memory shortfalls with numbers', () => {
    const r = parseNvidiaSmi(fixture('two-gpus.csv'), 1);
    if (!r.ok) throw new Error('fixture');
    expect(visibleGpus(r.gpus, '1').map((g) => g.index)).toEqual([1]);
    expect(visibleGpus(r.gpus, 'GPU-aaaa0000-0000-0000-0000-000000000000').map((g) => g.index)).toEqual([0]);
    expect(visibleGpus(r.gpus, undefined)).toHaveLength(2);
    const short = memoryShortfall(r.gpus, 0.9);
    expect(short.map((s) => [s.gpu.index, s.neededMiB])).toEqual([[1, 73404]]);
  });
});
