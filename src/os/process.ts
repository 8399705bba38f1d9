/**
 * Whether a process with this pid exists. EPERM means it exists but belongs to another user
 * (still alive); ESRCH means it is gone. Used by every "is the owner of this pidfile alive" check.
 */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
