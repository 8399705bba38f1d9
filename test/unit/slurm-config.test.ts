import { describe, expect, it } from 'vitest';
import { ConfigError, parseModelsYaml } from '../../src/config/load.js';
import { launcherOf } from '../../src/config/models.js';

const parse = (text: string) => parseModelsYaml(text, 'models.yaml');

describe('launcher config in models.yaml', () => {
  it('a model without a launcher runs locally', () => {
    const [m] = parse('models:\n  - id: a\n    engine: sim\n');
    expect(launcherOf(m!)).toBeNull();
  });

  it('a profile by name, with defaults filled in', () => {
    const [m] = parse(
      'profiles:\n  p: { kind: slurm, partition: gpu }\nmodels:\n  - id: a\n    engine: sim\n    launcher: p\n',
    );
    expect(launcherOf(m!)).toMatchObject({
      kind: 'slurm',
      partition: 'gpu',
      nodes: 1,
      poll_s: 5,
      on_shutdown: 'cancel',
      replace_before_s: 300,
      bind_host: '0.0.0.0',
      setup: [],
      submit_args: [],
    });
  });

  it('a profile plus overrides: own keys win, env and cache merge key by key', () => {
    const [m] = parse(`
profiles:
  p: { kind: slurm, partition: gpu, time: "1:00:00", env: { A: "1", B: "2" }, cache: { hf_home: /hf } }
models:
  - id: a
    engine: sim
    launcher: { profile: p, time: "2:00:00", env: { B: "3" }, cache: { triton_cache_dir: /t } }
`);
    const l = launcherOf(m!)!;
    expect(l.time).toBe('2:00:00');
    expect(l.partition).toBe('gpu');
    expect(l.env).toEqual({ A: '1', B: '3' });
    expect(l.cache).toEqual({ hf_home: '/hf', triton_cache_dir: '/t' });
  });

  it('an unknown profile is a config error naming the known ones', () => {
    expect(() =>
      parse('profiles:\n  p: { kind: slurm }\nmodels:\n  - id: a\n    engine: sim\n    launcher: q\n'),
    ).toThrow(ConfigError);
    try {
      parse('profiles:\n  p: { kind: slurm }\nmodels:\n  - id: a\n    engine: sim\n    launcher: q\n');
    } catch (e) {
      expect((e as ConfigError).issues).toEqual([
        'MODELS_FILE models.yaml models.0.launcher: unknown launcher profile "q" (profiles: p)',
      ]);
    }
  });

  it('bad values are refused with the field named', () => {
    const bad = (l: string) => () => parse(`models:\n  - id: a\n    engine: sim\n    launcher: ${l}\n`);
    expect(bad('{ kind: lsf }')).toThrow(/launcher/);
    expect(bad('{ kind: slurm, time: "soon" }')).toThrow(/a time limit like 30, 1:30:00 or 2-00:00:00/);
    expect(bad('{ kind: slurm, mem: "lots" }')).toThrow(/a size like 64G/);
    expect(bad('{ kind: slurm, nodes: 0 }')).toThrow(/launcher/);
    expect(bad('{ kind: slurm, partitoin: gpu }')).toThrow(/partitoin/);
  });
});
