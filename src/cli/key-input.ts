/**
 * Key presses while a batch is watched on a terminal: raw mode on stdin, one key at a time.
 *   c → "Cancel batch …? [y/N]" → y cancels, anything else does not
 *   d → details (the batch object and why it waits)
 *   Ctrl-C → stop watching (the batch keeps running)
 *   any other key (Enter…) → keep waiting
 */
export interface KeyPromptDeps {
  batchId: string;
  say(text: string): void;
  details(): string;
  cancel(): Promise<void>;
  interrupt(): void;
}

export class KeyPrompt {
  private confirming = false;
  private readonly onData = (buf: Buffer) => void this.handle(buf.toString('utf8'));
  private readonly wasRaw: boolean;

  constructor(private readonly deps: KeyPromptDeps) {
    this.wasRaw = process.stdin.isRaw;
    process.stdin.setRawMode(true);
    process.stdin.on('data', this.onData);
    process.stdin.resume();
  }

  private async handle(keys: string): Promise<void> {
    for (const key of keys) {
      if (key === '\u0003') return this.deps.interrupt();
      if (this.confirming) {
        this.confirming = false;
        if (key === 'y' || key === 'Y') {
          try {
            await this.deps.cancel();
          } catch (e) {
            this.deps.say(`cancel failed: ${(e as Error).message}`);
          }
        } else {
          this.deps.say('not cancelled; still watching');
        }
        continue;
      }
      if (key === 'c' || key === 'C') {
        this.confirming = true;
        this.deps.say(`Cancel batch ${this.deps.batchId}? Results so far are kept. [y/N]`);
      } else if (key === 'd' || key === 'D') {
        this.deps.say(this.deps.details());
      } else {
        this.deps.say('still waiting (c cancel · d details · Ctrl-C stop watching)');
      }
    }
  }

  close(): void {
    process.stdin.off('data', this.onData);
    if (process.stdin.isTTY) process.stdin.setRawMode(this.wasRaw);
    process.stdin.pause();
  }
}
