import type { LauncherConfig, ModelConfig } from '../../config/models.js';
import { buildEngineCommand } from '../commands.js';
import type { EngineCommand } from '../engine-command.js';

/** The line a job prints (and writes to its endpoint file) once it knows where the engine listens. */
export const ENDPOINT_MARK = 'batchwright-endpoint';

export interface JobScriptInput {
  model: ModelConfig;
  launcher: LauncherConfig;
  /** Job name (`--job-name`, PBS `-N`). */
  name: string;
  /** The job's stdout+stderr (on storage the worker can read). */
  outputFile: string;
  /** The job writes `<host> <port>` to `<endpointFile>.<job id>`. */
  endpointFile: string;
}

/** POSIX single quotes: safe for any string. */
export function shq(s: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** GPUs per node as a number (`A40:4` → 4, `2` → 2, unset → 0). */
export function gpusPerNode(l: LauncherConfig): number {
  if (l.gpus === undefined) return 0;
  if (typeof l.gpus === 'number') return l.gpus;
  const m = /(\d+)$/.exec(l.gpus);
  return m ? Number(m[1]) : 1;
}

/** Tensor × pipeline parallel sizes the job's vLLM runs with (vLLM's guide: TP = GPUs per node, PP = nodes). */
export function parallelism(l: LauncherConfig): { tensor: number; pipeline: number } | null {
  if (l.nodes <= 1 && l.tensor_parallel_size === undefined && l.pipeline_parallel_size === undefined) return null;
  return {
    tensor: l.tensor_parallel_size ?? Math.max(1, gpusPerNode(l)),
    pipeline: l.pipeline_parallel_size ?? l.nodes,
  };
}

/** The engine's command line inside the job, with the port as the shell variable $PORT. */
export function engineShellCommand(
  model: ModelConfig,
  l: LauncherConfig,
): { line: string; env: Record<string, string> } {
  const path = l.stage ? l.stage.to : (model.path ?? model.id);
  if (l.engine_command) {
    const line = l.engine_command
      .replaceAll('{port}', '"$PORT"')
      .replaceAll('{host}', shq(l.bind_host))
      .replaceAll('{model}', shq(model.id))
      .replaceAll('{path}', stagedPathWord(l, path));
    return { line, env: { ...model.options.env } };
  }
  const PORT_SENTINEL = 1; // replaced below: the port is only known on the node
  const cmd: EngineCommand = buildEngineCommand({ ...model, path }, PORT_SENTINEL, l.bind_host);
  const args = [...cmd.args];
  const par = parallelism(l);
  if (model.engine === 'vllm' && par) {
    args.push('--tensor-parallel-size', String(par.tensor), '--pipeline-parallel-size', String(par.pipeline));
    if (l.nodes > 1) args.push('--distributed-executor-backend', 'ray');
  }
  const words = args.map((a, i) => {
    if (args[i - 1] === '--port' && a === String(PORT_SENTINEL)) return '"$PORT"';
    if (l.stage && a === path) return stagedPathWord(l, path); // $TMPDIR in `to` expands on the node
    return shq(a);
  });
  return { line: [shq(cmd.command), ...words].join(' '), env: cmd.env };
}

/** A staged path keeps its shell variables (`$TMPDIR/x`) live: double quotes, $ left alone. */
function stagedPathWord(l: LauncherConfig, path: string): string {
  return l.stage ? `"${path.replace(/(["\\`])/g, '\\$1')}"` : shq(path);
}

function directives(kind: 'slurm' | 'pbs', i: JobScriptInput): string[] {
  const l = i.launcher;
  if (kind === 'slurm') {
    const d = [`--job-name=${i.name}`, `--output=${i.outputFile}`, `--nodes=${l.nodes}`, '--ntasks-per-node=1'];
    if (l.partition) d.push(`--partition=${l.partition}`);
    if (l.account) d.push(`--account=${l.account}`);
    if (l.qos) d.push(`--qos=${l.qos}`);
    if (l.time) d.push(`--time=${l.time}`);
    if (l.cpus) d.push(`--cpus-per-task=${l.cpus}`);
    if (l.mem) d.push(`--mem=${l.mem}`);
    if (l.gpus !== undefined && l.gpus !== 0) d.push(`--gpus-per-node=${l.gpus}`);
    d.push(...l.submit_args);
    return d.map((x) => `#SBATCH ${x}`);
  }
  const select = [`select=${l.nodes}`, `ncpus=${l.cpus ?? 1}`];
  if (l.gpus !== undefined && gpusPerNode(l) > 0) select.push(`ngpus=${gpusPerNode(l)}`);
  if (l.mem) select.push(`mem=${pbsMem(l.mem)}`);
  const d = [`-N ${i.name.slice(0, 236)}`, `-o ${i.outputFile}`, '-j oe', `-l ${select.join(':')}`];
  if (l.nodes > 1) d.push('-l place=scatter');
  if (l.partition) d.push(`-q ${l.partition}`);
  if (l.account) d.push(`-A ${l.account}`);
  if (l.time) d.push(`-l walltime=${pbsWalltime(l.time)}`);
  d.push(...l.submit_args);
  return d.map((x) => `#PBS ${x}`);
}

/** `64G` → `64gb` (PBS sizes). */
function pbsMem(mem: string): string {
  const m = /^(\d+)([KMGT]?)B?$/i.exec(mem);
  return m ? `${m[1]}${(m[2] || 'M').toLowerCase()}b` : mem;
}

/** SLURM-style `--time` (minutes, H:MM:SS, D-HH:MM:SS) → PBS `HH:MM:SS`. */
export function pbsWalltime(t: string): string {
  const m = /^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/.exec(t)!;
  let s: number;
  const a = Number(m[2]);
  const b = m[3] === undefined ? undefined : Number(m[3]);
  const c = m[4] === undefined ? undefined : Number(m[4]);
  if (m[1] !== undefined) s = Number(m[1]) * 86400 + a * 3600 + (b ?? 0) * 60 + (c ?? 0);
  else if (b === undefined) s = a * 60;
  else if (c === undefined) s = a * 60 + b;
  else s = a * 3600 + b * 60 + c;
  const p = (n: number) => String(n).padStart(2, '0');
  return `${p(Math.floor(s / 3600))}:${p(Math.floor((s % 3600) / 60))}:${p(s % 60)}`;
}

function exports(model: ModelConfig, l: LauncherConfig, engineEnv: Record<string, string>): string[] {
  const env: Record<string, string> = {};
  if (l.cache.hf_home) env['HF_HOME'] = l.cache.hf_home;
  if (l.cache.triton_cache_dir) env['TRITON_CACHE_DIR'] = l.cache.triton_cache_dir;
  if (l.cache.vllm_cache_root) env['VLLM_CACHE_ROOT'] = l.cache.vllm_cache_root;
  if (l.cache.xdg_cache_home) env['XDG_CACHE_HOME'] = l.cache.xdg_cache_home;
  Object.assign(env, engineEnv, l.env);
  void model;
  // Double quotes: cache paths like $TMPDIR/hf expand on the node.
  return Object.entries(env).map(([k, v]) => `export ${k}="${v.replace(/(["\\`])/g, '\\$1')}"`);
}

function stageLines(kind: 'slurm' | 'pbs', l: LauncherConfig): string[] {
  const s = l.stage;
  if (!s) return [];
  const to = `"${s.to.replace(/(["\\`])/g, '\\$1')}"`;
  const from = shq(s.from);
  const lines = ['echo "batchwright: staging weights to node-local storage"', 't_stage=$SECONDS'];
  if (s.method === 'sbcast' && kind === 'slurm') {
    // sbcast copies one file to the same path on every node of the job.
    lines.push(`srun --ntasks-per-node=1 mkdir -p "$(dirname ${to})"`, `sbcast --force ${from} ${to}`);
  } else {
    const copy = s.method === 'rsync' ? `rsync -a ${from}/ ${to}/` : `cp -r ${from} ${to}`;
    const per = `mkdir -p "$(dirname ${to})" && ${copy}`;
    // Every node needs its own copy: one task per node.
    lines.push(l.nodes > 1 && kind === 'slurm' ? `srun --ntasks-per-node=1 bash -c ${shq(per)}` : per);
  }
  lines.push('echo "batchwright: staged in $((SECONDS - t_stage)) s"');
  return lines;
}

/** Picks the port on the node: the configured one, else a free one (python3, node, or a random high port). */
function portLines(l: LauncherConfig): string[] {
  if (l.port) return [`PORT=${l.port}`];
  return [
    'PORT=$(python3 -c "import socket; s=socket.socket(); s.bind((\'\', 0)); print(s.getsockname()[1])" 2>/dev/null \\',
    '  || node -e "const s=require(\'net\').createServer().listen(0,()=>{console.log(s.address().port);s.close()})" 2>/dev/null \\',
    '  || echo $((20000 + RANDOM % 20000)))',
  ];
}

/**
 * The job script: directives, setup lines, cache folders, staging, then the engine in the
 * foreground (exec, so scancel/qdel's SIGTERM reaches it). Before the engine starts it prints
 * `batchwright-endpoint <node> <port>` and writes the same to the endpoint file.
 * `nodes > 1` (SLURM): Ray head on the first node, Ray workers on the others through srun,
 * then vLLM on the head with tensor/pipeline parallel sizes (vLLM's multi-node serving guide).
 */
export function buildJobScript(kind: 'slurm' | 'pbs', i: JobScriptInput): string {
  const l = i.launcher;
  const { line, env } = engineShellCommand(i.model, l);
  const out: string[] = [
    '#!/bin/bash',
    ...directives(kind, i),
    `# batchwright engine for model ${i.model.id.replace(/\n/g, ' ')}`,
    'set -eo pipefail',
  ];
  if (kind === 'pbs') out.push('cd "${PBS_O_WORKDIR:-$HOME}"');
  if (l.setup.length) out.push('# setup', ...l.setup);
  const ex = exports(i.model, l, env);
  if (ex.length) out.push('# environment and cache folders', ...ex);
  out.push(...stageLines(kind, l));
  const nodeVar = kind === 'slurm' ? '${SLURMD_NODENAME:-$(hostname)}' : '$(hostname)';
  if (l.nodes > 1) out.push(...multiNodeLines(kind, l));
  else out.push(`NODE=${nodeVar}`);
  out.push(...portLines(l));
  const jobVar = kind === 'slurm' ? '$SLURM_JOB_ID' : '$PBS_JOBID';
  out.push(`echo "${ENDPOINT_MARK} $NODE $PORT"`, `echo "$NODE $PORT" > ${shq(i.endpointFile)}."${jobVar}"`);
  out.push(`exec ${line}`);
  return `${out.join('\n')}\n`;
}

function multiNodeLines(kind: 'slurm' | 'pbs', l: LauncherConfig): string[] {
  const gpus = gpusPerNode(l);
  const gpuOpt = gpus > 0 ? ` --num-gpus=${gpus}` : '';
  const lines = [
    '# multi-node: Ray head here, one Ray worker per other node, vLLM on the head',
    'RAY_PORT=${RAY_PORT:-6379}',
  ];
  if (kind === 'slurm') {
    lines.push(
      'NODES=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))',
      'NODE=${NODES[0]}',
      '# the batch step runs on the first node: the Ray head (daemonized) and vLLM run here',
      "HEAD_IP=$(hostname --ip-address | awk '{print $1}')",
      `VLLM_HOST_IP=$HEAD_IP ray start --head --node-ip-address=$HEAD_IP --port=$RAY_PORT${gpuOpt}`,
      'for W in "${NODES[@]:1}"; do',
      `  srun --nodes=1 --ntasks=1 -w "$W" --overlap bash -c "VLLM_HOST_IP=\\$(hostname --ip-address | awk '{print \\$1}') ray start --address=$HEAD_IP:$RAY_PORT${gpuOpt} --block" &`,
      'done',
    );
  } else {
    lines.push(
      'NODES=($(sort -u "$PBS_NODEFILE"))',
      'NODE=${NODES[0]}',
      "HEAD_IP=$(hostname --ip-address | awk '{print $1}')",
      `VLLM_HOST_IP=$HEAD_IP ray start --head --node-ip-address=$HEAD_IP --port=$RAY_PORT${gpuOpt}`,
      'for W in "${NODES[@]:1}"; do',
      `  pbs_tmrsh "$W" bash -lc "cd $PWD; VLLM_HOST_IP=\\$(hostname --ip-address | awk '{print \\$1}') ray start --address=$HEAD_IP:$RAY_PORT${gpuOpt} --block" &`,
      'done',
    );
  }
  lines.push(
    `# wait (up to 10 min) until all ${l.nodes} nodes have joined the Ray cluster`,
    'for _ in $(seq 120); do',
    `  n=$(python3 -c "import ray; ray.init(address='auto', logging_level='error'); print(sum(1 for x in ray.nodes() if x['Alive']))" 2>/dev/null || echo 0)`,
    `  [ "$n" -ge ${l.nodes} ] && break; sleep 5`,
    'done',
    `[ "$n" -ge ${l.nodes} ] || { echo "batchwright: only $n of ${l.nodes} nodes joined the Ray cluster" >&2; exit 1; }`,
    'export VLLM_HOST_IP=$HEAD_IP',
  );
  return lines;
}
