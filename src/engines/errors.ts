/**
 * Errors of the engines module. Callers match on `code` (a stable string, like undici's
 * `UND_ERR_*`), never on `instanceof`, because these cross process boundaries as data.
 */
export type EngineErrorCode =
  | 'ENGINE_START_FAILED'
  /** Not enough free GPU memory for a vLLM engine's gpu_memory_utilization, after waiting for it. */
  | 'ENGINE_GPU_MEMORY'
  | 'ENGINE_HEALTH_TIMEOUT'
  | 'ENGINE_EXITED'
  | 'ENGINE_RESTART_LIMIT'
  | 'ENGINE_UNKNOWN_MODEL'
  | 'ENGINE_SHUTDOWN'
  | 'ENGINE_REQUEST_FAILED';

export interface EngineErrorDetails {
  /** Model id the error is about. */
  model?: string;
  /** Exit code of the engine process (ENGINE_START_FAILED, ENGINE_EXITED). */
  exitCode?: number | null;
  /** Signal that ended the engine process, if any. */
  signal?: string | null;
  /** Last lines the engine wrote (stderr, or stdout when stderr was silent). */
  outputTail?: readonly string[];
  /** The engine's log file. */
  logFile?: string;
}

export class EngineError extends Error {
  override name = 'EngineError';
  readonly code: EngineErrorCode;
  readonly model: string | undefined;
  readonly exitCode: number | null | undefined;
  readonly signal: string | null | undefined;
  readonly outputTail: readonly string[];
  readonly logFile: string | undefined;

  constructor(code: EngineErrorCode, message: string, details: EngineErrorDetails = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.model = details.model;
    this.exitCode = details.exitCode;
    this.signal = details.signal;
    this.outputTail = details.outputTail ?? [];
    this.logFile = details.logFile;
  }
}

/** True when `err` is an EngineError-shaped value with this code (works across realms). */
export function isEngineError(err: unknown, code?: EngineErrorCode): err is EngineError {
  if (typeof err !== 'object' || err === null) return false;
  const c = (err as { code?: unknown }).code;
  return (
    (err as { name?: unknown }).name === 'EngineError' && typeof c === 'string' && (code === undefined || c === code)
  );
}

/** Formats the tail for a message: at most `n` lines, each clipped, joined with " | ". */
export function formatTail(lines: readonly string[], n = 8): string {
  if (lines.length === 0) return '(no output)';
  return lines
    .slice(-n)
    .map((l) => (l.length > 300 ? `${l.slice(0, 300)}…` : l))
    .join(' | ');
}

export function startFailedError(
  d: Required<Pick<EngineErrorDetails, 'model' | 'logFile' | 'outputTail'>> & EngineErrorDetails,
  cause?: unknown,
): EngineError {
  const how = d.signal ? `was killed by ${d.signal}` : `exited with code ${d.exitCode ?? 'unknown'}`;
  return new EngineError(
    'ENGINE_START_FAILED',
    `engine for model ${d.model} ${how} during start-up; last output: ${formatTail(d.outputTail)} — check the model path, the engine options and the engine log at ${d.logFile}`,
    d,
    { cause },
  );
}

export function healthTimeoutError(
  model: string,
  timeoutMs: number,
  logFile: string,
  outputTail: readonly string[],
): EngineError {
  return new EngineError(
    'ENGINE_HEALTH_TIMEOUT',
    `engine for model ${model} was not healthy within ${Math.round(timeoutMs / 1000)} s and was killed; last output: ${formatTail(outputTail)} — raise startup_timeout_s if loading is just slow, or check the engine log at ${logFile}`,
    { model, logFile, outputTail },
  );
}

export function unknownModelError(model: string, known: readonly string[]): EngineError {
  return new EngineError(
    'ENGINE_UNKNOWN_MODEL',
    `model ${JSON.stringify(model)} is not in the model registry (known: ${known.join(', ') || 'none'}) — add it to models.yaml or use one of the known ids`,
    { model },
  );
}

export function shutdownError(model?: string): EngineError {
  return new EngineError(
    'ENGINE_SHUTDOWN',
    `engine manager is shutting down${model ? ` (model ${model})` : ''}; no engine will be started — retry on another worker or after restart`,
    model === undefined ? {} : { model },
  );
}

export function restartLimitError(
  model: string,
  failures: number,
  windowMs: number,
  lastError: string | null,
  logFile: string,
): EngineError {
  return new EngineError(
    'ENGINE_RESTART_LIMIT',
    `engine for model ${model} failed ${failures} times in ${Math.round(windowMs / 60_000)} min and will not be restarted; last error: ${lastError ?? 'unknown'} — fix the cause (engine log at ${logFile}), then stop the engine to reset it or wait for the window to pass`,
    { model, logFile },
  );
}
