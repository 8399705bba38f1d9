import { spawn, type ChildProcess } from 'node:child_process';
import type { LauncherConfig } from '../../config/models.js';

/**
 * `ssh -N -L <local>:<node>:<port> [user@]host`: the engine on a compute node that the worker
 * cannot reach directly, through a login node that can. BatchMode: never prompts (keys only);
 * ExitOnForwardFailure: a busy local port fails at once instead of a silent tunnel-less ssh.
 */
export function tunnelArgv(
  t: NonNullable<LauncherConfig['tunnel']>,
  localPort: number,
  node: string,
  port: number,
): string[] {
  const args = ['-N', '-L', `127.0.0.1:${localPort}:${node}:${port}`];
  args.push(
    '-o',
    'ExitOnForwardFailure=yes',
    '-o',
    'BatchMode=yes',
    '-o',
    'ServerAliveInterval=15',
    '-o',
    'ServerAliveCountMax=3',
  );
  if (t.port) args.push('-p', String(t.port));
  if (t.identity_file) args.push('-i', t.identity_file);
  args.push(...t.options);
  args.push(t.user ? `${t.user}@${t.host}` : t.host);
  return args;
}

/** A running tunnel: ssh as a child in its own process group. */
export class SshTunnel {
  private child: ChildProcess | undefined;
  private exited = false;
  readonly stderr: string[] = [];

  constructor(
    readonly argv: string[],
    private readonly ssh = 'ssh',
  ) {}

  start(onExit: (code: number | null) => void): void {
    const child = spawn(this.ssh, this.argv, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    this.child = child;
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      for (const l of d.split('\n')) if (l.trim()) this.stderr.push(l.trim());
      this.stderr.splice(0, Math.max(0, this.stderr.length - 20));
    });
    child.once('error', (err) => this.stderr.push(err.message));
    child.once('exit', (code) => {
      this.exited = true;
      onExit(code);
    });
  }

  get isRunning(): boolean {
    return !!this.child?.pid && !this.exited;
  }

  stop(): void {
    if (!this.child?.pid || this.exited) return;
    try {
      process.kill(-this.child.pid, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
}
