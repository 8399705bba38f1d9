import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { parseModelsYaml } from '../../src/config/load.js';
import { launcherOf, type ModelConfig } from '../../src/config/models.js';
import {
  buildJobScript,
  engineShellCommand,
  gpusPerNode,
  parallelism,
  pbsWalltime,
  shq,
} from '../../src/engines/launchers/script.js';
import { tunnelArgv } from '../../src/engines/launchers/tunnel.js';

const yaml = (text: string) => parseModelsYaml(text, 'models.yaml');
const scriptOf = (m: ModelConfig, kind: 'slurm' | 'pbs' = 'slurm') =>
  buildJobScript(kind, {
    model: m,
    launcher: launcherOf(m)!,
    name: `bw-${m.id}`,
    outputFile: '/home/u/bw/launchers/x/job-%j.out',
    endpointFile: '/home/u/bw/launchers/x/endpoint',
  });

// The clusters our users name: Alvis (C3SE) with A40s, and an H100 partition with 4 GPUs per node.
const models = yaml(`
profiles:
  alvis-a40:
    kind: slurm
    partition: alvis
    account: NAISS2025-22-123
    time: "08:00:00"
    gpus: "A40:1"
    cpus: 16
    setup:
      - module purge
      - module load vLLM/0.9.1-foss-2024a-CUDA-12.6.0
    cache:
      hf_home: /mimer/NOBACKUP/groups/myproj/hf
      triton_cache_dir: $TMPDIR/triton
    monitor_url: https://job.c3se.chalmers.se/alvis/{job_id}
  h100:
    kind: slurm
    partition: h100
    time: 2-00:00:00
    gpus: 4
    cpus: 64
    mem: 480G
    submit_args: ["--exclusive"]
models:
  - id: llama-8b
    engine: vllm
    path: /mimer/NOBACKUP/groups/myproj/models/Llama-3.1-8B-Instruct
    options: { max_model_len: 8192, gpu_memory_utilization: 0.9 }
    launcher:
      profile: alvis-a40
      stage: { from: /mimer/NOBACKUP/groups/myproj/models/Llama-3.1-8B-Instruct, to: $TMPDIR/llama-8b, method: copy }
  - id: llama-405b
    engine: vllm
    path: meta-llama/Llama-3.1-405B-Instruct
    launcher: { profile: h100, nodes: 4, time: "12:00:00" }
  - id: custom
    engine: vllm
    launcher:
      kind: slurm
      port: 8000
      engine_command: apptainer exec --nv vllm.sif vllm serve {path} --port {port} --host {host} --served-model-name {model}
`);
const [alvis, big, custom] = models as [ModelConfig, ModelConfig, ModelConfig];

describe('job script (SLURM, golden)', () => {
  it('Alvis A40: directives, setup lines, cache folders, staging, port discovery, endpoint, exec', async () => {
    const s = scriptOf(alvis);
    await expect(s).toMatchFileSnapshot('../fixtures/slurm/alvis-a40.sh');
    const lines = s.split('\n');
    expect(lines).toContain('#SBATCH --partition=alvis');
    expect(lines).toContain('#SBATCH --account=NAISS2025-22-123');
    expect(lines).toContain('#SBATCH --gpus-per-node=A40:1');
    expect(lines).toContain('#SBATCH --time=08:00:00');
    expect(lines).toContain('#SBATCH --output=/home/u/bw/launchers/x/job-%j.out');
    expect(lines).toContain('module load vLLM/0.9.1-foss-2024a-CUDA-12.6.0');
    expect(lines).toContain('export TRITON_CACHE_DIR="$TMPDIR/triton"');
    expect(lines).toContain('export HF_HOME="/mimer/NOBACKUP/groups/myproj/hf"');
    expect(s).toContain(
      'mkdir -p "$(dirname "$TMPDIR/llama-8b")" && cp -r /mimer/NOBACKUP/groups/myproj/models/Llama-3.1-8B-Instruct "$TMPDIR/llama-8b"',
    );
    // The engine loads the staged copy, listens on all interfaces, on the port picked on the node.
    expect(lines.at(-2)).toBe(
      `exec vllm serve "$TMPDIR/llama-8b" --host 0.0.0.0 --port "$PORT" --served-model-name llama-8b --gpu-memory-utilization 0.9 --max-model-len 8192`,
    );
    expect(s).toContain('echo "batchwright-endpoint $NODE $PORT"');
    expect(s).toContain('echo "$NODE $PORT" > /home/u/bw/launchers/x/endpoint."$SLURM_JOB_ID"');
    // setup lines come before the engine, staging before the engine too
    expect(s.indexOf('module purge')).toBeLessThan(s.indexOf('cp -r'));
    expect(s.indexOf('cp -r')).toBeLessThan(s.indexOf('exec vllm'));
  });

  it('H100 × 4 nodes: one vLLM over Ray, TP = GPUs per node, PP = nodes (vLLM multi-node serving)', async () => {
    const s = scriptOf(big);
    await expect(s).toMatchFileSnapshot('../fixtures/slurm/h100-4-nodes.sh');
    expect(s).toContain('#SBATCH --nodes=4\n#SBATCH --ntasks-per-node=1');
    expect(s).toContain('#SBATCH --gpus-per-node=4');
    expect(s).toContain('#SBATCH --exclusive');
    expect(s).toContain('#SBATCH --time=12:00:00'); // the model's override wins over the profile
    expect(s).toContain('NODES=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))');
    expect(s).toContain('ray start --head --node-ip-address=$HEAD_IP --port=$RAY_PORT --num-gpus=4');
    expect(s).toMatch(
      /srun --nodes=1 --ntasks=1 -w "\$W" --overlap bash -c ".*ray start --address=\$HEAD_IP:\$RAY_PORT --num-gpus=4 --block" &/,
    );
    expect(s).toContain('[ "$n" -ge 4 ] && break');
    expect(s.trim().split('\n').at(-1)).toBe(
      `exec vllm serve meta-llama/Llama-3.1-405B-Instruct --host 0.0.0.0 --port "$PORT" --served-model-name llama-405b --tensor-parallel-size 4 --pipeline-parallel-size 4 --distributed-executor-backend ray`,
    );
    expect(parallelism(launcherOf(big)!)).toEqual({ tensor: 4, pipeline: 4 });
  });

  it('explicit tensor/pipeline sizes win; a single node with several GPUs gets TP without Ray', () => {
    const [m1, m2] = yaml(`
models:
  - id: a
    engine: vllm
    launcher: { kind: slurm, nodes: 2, gpus: "h100:4", tensor_parallel_size: 8, pipeline_parallel_size: 1 }
  - id: b
    engine: vllm
    launcher: { kind: slurm, gpus: 4, tensor_parallel_size: 4 }
`) as [ModelConfig, ModelConfig];
    expect(engineShellCommand(m1, launcherOf(m1)!).line).toContain(
      '--tensor-parallel-size 8 --pipeline-parallel-size 1 --distributed-executor-backend ray',
    );
    const b = engineShellCommand(m2, launcherOf(m2)!).line;
    expect(b).toContain('--tensor-parallel-size 4 --pipeline-parallel-size 1');
    expect(b).not.toContain('ray');
    expect(gpusPerNode(launcherOf(m1)!)).toBe(4);
  });

  it('engine_command replaces the built command, with {port} {host} {model} {path}; a fixed port', () => {
    const s = scriptOf(custom);
    expect(s).toContain('PORT=8000\n');
    expect(s).toContain(
      `exec apptainer exec --nv vllm.sif vllm serve custom --port "$PORT" --host 0.0.0.0 --served-model-name custom\n`,
    );
    expect(s).not.toContain('#SBATCH --partition'); // the cluster's default partition
  });

  it('sim engine in a job: absolute node + tsx + simulator paths, so it runs from any cwd on a shared filesystem', () => {
    const [m] = yaml(`models:\n  - id: s\n    engine: sim\n    launcher: { kind: slurm, cpus: 1 }\n`) as [ModelConfig];
    const line = scriptOf(m).trim().split('\n').at(-1)!;
    expect(line).toMatch(
      new RegExp(
        `^exec ${process.execPath.replace(/[/.]/g, '\\$&')} --import file:///\\S+ /\\S+/simulator/main.ts --port "\\$PORT" --host 0.0.0.0 --model s`,
      ),
    );
  });

  it('PBS: #PBS directives, select with ngpus and mem, walltime, queue', async () => {
    const [m] = yaml(
      `models:\n  - id: p\n    engine: vllm\n    launcher: { kind: pbs, partition: gpuq, account: proj1, gpus: 2, cpus: 8, mem: 64G, time: "90" }\n`,
    ) as [ModelConfig];
    const s = scriptOf(m, 'pbs');
    await expect(s).toMatchFileSnapshot('../fixtures/pbs/job-script.sh');
    expect(s).toContain('#PBS -l select=1:ncpus=8:ngpus=2:mem=64gb');
    expect(s).toContain('#PBS -l walltime=01:30:00');
    expect(s).toContain('#PBS -q gpuq');
    expect(s).toContain('#PBS -A proj1');
    expect(s).toContain('#PBS -j oe');
    expect(s).toContain('> /home/u/bw/launchers/x/endpoint."$PBS_JOBID"');
  });

  it('every generated script is valid bash (bash -n)', () => {
    for (const [m, kind] of [
      [alvis, 'slurm'],
      [big, 'slurm'],
      [custom, 'slurm'],
      [alvis, 'pbs'],
      [big, 'pbs'],
    ] as const) {
      const r = spawnSync('bash', ['-n'], { input: scriptOf(m, kind), encoding: 'utf8' });
      expect(r.stderr, `${m.id} ${kind}`).toBe('');
      expect(r.status).toBe(0);
    }
  });

  it('pbsWalltime and shq', () => {
    expect(pbsWalltime('30')).toBe('00:30:00');
    expect(pbsWalltime('1:30:00')).toBe('01:30:00');
    expect(pbsWalltime('2-00:00:00')).toBe('48:00:00');
    expect(pbsWalltime('5:30')).toBe('00:05:30');
    expect(shq("it's")).toBe(`'it'\\''s'`);
    expect(shq('plain-word_1.2')).toBe('plain-word_1.2');
    expect(shq('$HOME')).toBe(`'$HOME'`);
  });
});

describe('ssh tunnel argv', () => {
  it('forwards a local port on loopback to node:port through the login node, never prompting', () => {
    expect(tunnelArgv({ host: 'alvis1.c3se.chalmers.se', user: 'me', options: [] }, 43001, 'alvis4-12', 38211)).toEqual(
      [
        '-N',
        '-L',
        '127.0.0.1:43001:alvis4-12:38211',
        '-o',
        'ExitOnForwardFailure=yes',
        '-o',
        'BatchMode=yes',
        '-o',
        'ServerAliveInterval=15',
        '-o',
        'ServerAliveCountMax=3',
        'me@alvis1.c3se.chalmers.se',
      ],
    );
    expect(
      tunnelArgv({ host: 'login', port: 2222, identity_file: '/k', options: ['-o', 'ProxyJump=gw'] }, 1, 'n', 2),
    ).toEqual([
      '-N',
      '-L',
      '127.0.0.1:1:n:2',
      '-o',
      'ExitOnForwardFailure=yes',
      '-o',
      'BatchMode=yes',
      '-o',
      'ServerAliveInterval=15',
      '-o',
      'ServerAliveCountMax=3',
      '-p',
      '2222',
      '-i',
      '/k',
      '-o',
      'ProxyJump=gw',
      'login',
    ]);
  });
});
