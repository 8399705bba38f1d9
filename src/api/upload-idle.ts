import type { IncomingMessage } from 'node:http';

/** No byte of the request body arrived for `ms`: the client stalled mid-upload. */
export class UploadIdleTimeoutError extends Error {
  override name = 'UploadIdleTimeoutError';
  readonly code = 'UPLOAD_IDLE_TIMEOUT';
  constructor(readonly ms: number) {
    super(`no bytes of the upload arrived for ${ms} ms`);
  }
}

export interface IdleWatch {
  /** True once the watch gave up on the client. */
  readonly fired: boolean;
  stop(): void;
}

/**
 * Cuts off an upload whose client stops sending: an *idle* timeout, not a total one, so a
 * 200 MB upload on a slow link that keeps sending is never cut. It polls the socket's byte
 * count instead of listening for 'data' (a listener would switch the request into flowing mode
 * before the multipart parser is attached, and lose bytes). When it fires, the request emits
 * an UploadIdleTimeoutError, which fails the multipart parser and the file stream (the partial
 * file is removed by the storage layer); the route then answers 408.
 */
export function watchUploadIdle(raw: IncomingMessage, idleMs: number): IdleWatch {
  let fired = false;
  if (idleMs <= 0 || !raw.socket) return { fired, stop: () => undefined };
  const socket = raw.socket;
  let last = socket.bytesRead;
  let lastAt = Date.now();
  const timer = setInterval(
    () => {
      if (raw.complete || raw.destroyed) return clearInterval(timer);
      const now = Date.now();
      if (socket.bytesRead !== last) {
        last = socket.bytesRead;
        lastAt = now;
        return;
      }
      if (now - lastAt < idleMs) return;
      fired = true;
      clearInterval(timer);
      const err = new UploadIdleTimeoutError(idleMs);
      // The multipart parser listens for request errors; without a listener, destroy instead
      // (an 'error' event nobody handles would crash the process).
      if (raw.listenerCount('error') > 0) raw.emit('error', err);
      else raw.destroy(err);
    },
    Math.max(25, Math.min(1000, Math.floor(idleMs / 4))),
  );
  timer.unref();
  return {
    get fired() {
      return fired;
    },
    stop: () => clearInterval(timer),
  };
}
