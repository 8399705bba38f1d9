/**
 * Worker "hosts" for the scale-out benchmark: each worker is its own process, optionally in its
 * own Linux network namespace joined to this one by a veth pair, so it reaches Redis over a
 * non-loopback address and advertises its engine on its own address, as a worker on another
 * machine would. Everything stays on this machine: no forwarding, no NAT, no route out.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT, jsonLinesOf, type Proc } from '../lib-batch/stack.js';

/** 10.213.<i>.0/30 per host: .1 on this side, .2 inside the namespace. */
const SUBNET = '10.213';
const NS_PREFIX = 'bwsc-';

export interface Host {
  index: number;
  /** Namespace name, or null: the worker runs in this namespace (loopback). */
  netns: string | null;
  /** Address the worker uses to reach Redis on this machine. */
  redisHost: string;
  /** Address the worker advertises for its engine (reachable from this namespace). */
  advertise: string | null;
}

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/** Deletes namespaces left by an earlier run that was killed (deleting one removes its veth pair). */
export function cleanupHosts(): void {
  let list: string;
  try {
    list = ip('netns', 'list');
  } catch {
    return;
  }
  for (const line of list.split('\n')) {
    const name = line.split(' ')[0];
    if (name?.startsWith(NS_PREFIX)) ip('netns', 'del', name);
  }
}

/** Creates `n` hosts; with `netns` false they are plain processes on loopback. */
export function createHosts(n: number, netns: boolean): Host[] {
  if (!netns)
    return Array.from({ length: n }, (_, i) => ({
      index: i + 1,
      netns: null,
      redisHost: '127.0.0.1',
      advertise: null,
    }));
  cleanupHosts();
  const hosts: Host[] = [];
  for (let i = 1; i <= n; i++) {
    const ns = `${NS_PREFIX}${i}`;
    const outer = `${ns}a`;
    const inner = `${ns}b`;
    ip('netns', 'add', ns);
    ip('link', 'add', outer, 'type', 'veth', 'peer', 'name', inner);
    ip('link', 'set', inner, 'netns', ns);
    ip('addr', 'add', `${SUBNET}.${i}.1/30`, 'dev', outer);
    ip('link', 'set', outer, 'up');
    ip('-n', ns, 'addr', 'add', `${SUBNET}.${i}.2/30`, 'dev', inner);
    ip('-n', ns, 'link', 'set', inner, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    hosts.push({ index: i, netns: ns, redisHost: `${SUBNET}.${i}.1`, advertise: `${SUBNET}.${i}.2` });
  }
  return hosts;
}

export function removeHosts(hosts: Host[]): void {
  for (const h of hosts) if (h.netns) ip('netns', 'del', h.netns);
}

/** Whether this process may create network namespaces (root and `ip` present). */
export function canUseNetns(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    ip('netns', 'list');
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts `src/main.ts worker` on a host: REDIS_URL on the host's side of its link, its own
 * DATA_DIR, and (in a namespace) engines bound inside the namespace and advertised on its
 * address, as ENGINE_BIND_HOST / ENGINE_ADVERTISE_HOST would be set on a GPU node.
 */
export function startWorkerOn(
  host: Host,
  opts: { redisPort: number; prefix: string; modelsFile: string; workerId: string; env?: Record<string, string> },
): Proc & { dataDir: string } {
  const dataDir = mkdtempSync(path.join(tmpdir(), `bw-scale-w${host.index}-`));
  const env: Record<string, string> = {
    REDIS_URL: `redis://${host.redisHost}:${opts.redisPort}`,
    QUEUE_PREFIX: opts.prefix,
    MODELS_FILE: opts.modelsFile,
    DATA_DIR: dataDir,
    WORKER_ID: opts.workerId,
    LOG_LEVEL: 'warn',
    ...(host.advertise && { ENGINE_BIND_HOST: '0.0.0.0', ENGINE_ADVERTISE_HOST: host.advertise }),
    ...opts.env,
  };
  const node = [process.execPath, '--import', 'tsx', path.join(ROOT, 'src/main.ts'), 'worker'];
  // `ip netns exec` execs the command: the pid is the worker's own.
  const [cmd, ...args] = host.netns ? ['ip', 'netns', 'exec', host.netns, ...node] : node;
  const proc = spawn(cmd!, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const cap = (d: Buffer) => {
    out += d.toString();
    if (out.length > 1_000_000) out = out.slice(-500_000);
  };
  proc.stdout.on('data', cap);
  proc.stderr.on('data', cap);
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return {
    name: opts.workerId,
    proc,
    pid: proc.pid!,
    dataDir,
    output: () => out,
    jsonLines: () => jsonLinesOf(out),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 30_000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
