import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface GpuReading {
  index: number;
  uuid: string;
  name: string;
  memoryTotalMiB: number;
  memoryUsedMiB: number;
  memoryFreeMiB: number;
  /** null where the driver reports "[N/A]" (some MIG and vGPU setups). */
  utilizationPct: number | null;
  temperatureC: number | null;
  /** When the reading was taken (ms): a reading is only ever shown with its time. */
  at: number;
}

export type GpuQuery = { ok: true; gpus: GpuReading[] } | { ok: false; reason: string };

export const NVIDIA_SMI_ARGS = [
  '--query-gpu=index,uuid,name,memory.total,memory.used,memory.free,utilization.gpu,temperature.gpu',
  '--format=csv,noheader,nounits',
];

const num = (s: string | undefined): number | null => {
  const t = (s ?? '').trim();
  if (t === '' || /^\[?n\/a\]?$/i.test(t) || /not supported/i.test(t)) return null;
  const n = Number(t);
  return Number.isFinite(n) ? n : null;
};

/**
 * Parses `nvidia-smi --query-gpu=… --format=csv,noheader,nounits`. Pure, tested on recorded
 * outputs. Driver failures print a sentence instead of CSV: that becomes { ok: false, reason }.
 */
export function parseNvidiaSmi(stdout: string, at: number): GpuQuery {
  const lines = stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  if (lines.length === 0) return { ok: true, gpus: [] };
  const gpus: GpuReading[] = [];
  for (const line of lines) {
    const f = line.split(',').map((x) => x.trim());
    const index = num(f[0]);
    const total = num(f[3]);
    const used = num(f[4]);
    const free = num(f[5]);
    if (f.length < 8 || index === null || total === null || used === null || free === null) {
      return { ok: false, reason: `nvidia-smi: ${lines.join(' ').slice(0, 300)}` };
    }
    gpus.push({
      index,
      uuid: f[1]!,
      name: f[2]!,
      memoryTotalMiB: total,
      memoryUsedMiB: used,
      memoryFreeMiB: free,
      utilizationPct: num(f[6]),
      temperatureC: num(f[7]),
      at,
    });
  }
  return { ok: true, gpus };
}

/** Runs nvidia-smi (a missing binary means: no NVIDIA GPU here). */
export async function queryGpus(command = 'nvidia-smi', timeoutMs = 10_000): Promise<GpuQuery> {
  try {
    const { stdout } = await run(command, NVIDIA_SMI_ARGS, { timeout: timeoutMs });
    return parseNvidiaSmi(stdout, Date.now());
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (err.code === 'ENOENT') return { ok: false, reason: `${command} not found: no NVIDIA driver on this machine` };
    const said = `${err.stdout ?? ''} ${err.stderr ?? ''}`.trim().replace(/\s+/g, ' ');
    return { ok: false, reason: `nvidia-smi failed: ${said || err.message}`.slice(0, 400) };
  }
}

/**
 * The GPUs a process may use, from CUDA_VISIBLE_DEVICES (indexes or UUIDs); undefined = all.
 * In CUDA_VISIBLE_DEVICES order (the process's device 0 first), then nvidia-smi's order.
 */
export function visibleGpus(all: readonly GpuReading[], cudaVisibleDevices: string | undefined): GpuReading[] {
  if (cudaVisibleDevices === undefined || cudaVisibleDevices.trim() === '') return [...all];
  const wanted = cudaVisibleDevices.split(',').map((s) => s.trim());
  const rank = (g: GpuReading) => wanted.findIndex((w) => w === String(g.index) || w === g.uuid);
  return all.filter((g) => rank(g) >= 0).sort((a, b) => rank(a) - rank(b));
}

/**
 * vLLM needs gpu_memory_utilization × TOTAL memory free at start, or it exits with
 * "Free memory on device … is less than desired GPU memory utilization". Returns the GPUs
 * that fall short, with the numbers, or [] when all have room.
 */
export function memoryShortfall(
  gpus: readonly GpuReading[],
  utilization: number,
): { gpu: GpuReading; neededMiB: number }[] {
  return gpus
    .map((gpu) => ({ gpu, neededMiB: Math.ceil(gpu.memoryTotalMiB * utilization) }))
    .filter(({ gpu, neededMiB }) => gpu.memoryFreeMiB < neededMiB);
}

/** One process holding memory on a GPU (`nvidia-smi --query-compute-apps`). */
export interface GpuProcess {
  gpuUuid: string;
  pid: number;
  name: string;
  /** null where the driver reports "[N/A]". */
  usedMiB: number | null;
}

export const NVIDIA_SMI_APPS_ARGS = [
  '--query-compute-apps=gpu_uuid,pid,process_name,used_memory',
  '--format=csv,noheader,nounits',
];

/** Parses `nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv,noheader,nounits`. */
export function parseComputeApps(stdout: string): GpuProcess[] {
  const out: GpuProcess[] = [];
  for (const line of stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)) {
    const f = line.split(',').map((x) => x.trim());
    if (f.length < 4) continue; // "No running processes found" and other sentences
    // A process name may itself contain commas: the fields around it are fixed.
    const pid = num(f[1]);
    if (pid === null) continue;
    out.push({ gpuUuid: f[0]!, pid, name: f.slice(2, -1).join(','), usedMiB: num(f[f.length - 1]) });
  }
  return out;
}

/**
 * The processes holding GPU memory; [] when nvidia-smi cannot say (also in containers, where
 * other containers' processes are not listed).
 */
export async function queryGpuProcesses(command = 'nvidia-smi', timeoutMs = 10_000): Promise<GpuProcess[]> {
  try {
    const { stdout } = await run(command, NVIDIA_SMI_APPS_ARGS, { timeout: timeoutMs });
    return parseComputeApps(stdout);
  } catch {
    return [];
  }
}
