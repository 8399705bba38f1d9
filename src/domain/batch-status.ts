/** OpenAI's batch status machine (see docs/notes/openai-contract.md). */
export const BATCH_STATUSES = [
  'validating',
  'failed',
  'in_progress',
  'finalizing',
  'completed',
  'expired',
  'cancelling',
  'cancelled',
] as const;
export type BatchStatus = (typeof BATCH_STATUSES)[number];

export const TERMINAL_STATUSES: ReadonlySet<BatchStatus> = new Set(['failed', 'completed', 'expired', 'cancelled']);
/** Statuses in which a batch still reads its input file. */
export const ACTIVE_STATUSES: readonly BatchStatus[] = ['validating', 'in_progress', 'finalizing', 'cancelling'];

const transitions: Record<BatchStatus, readonly BatchStatus[]> = {
  validating: ['in_progress', 'failed', 'cancelling', 'expired'],
  in_progress: ['finalizing', 'cancelling', 'expired', 'failed'],
  finalizing: ['completed', 'expired', 'cancelled', 'failed'],
  cancelling: ['finalizing', 'cancelled'],
  failed: [],
  completed: [],
  expired: [],
  cancelled: [],
};

export function canTransition(from: BatchStatus, to: BatchStatus): boolean {
  return transitions[from].includes(to);
}

/** The `*_at` column each status sets when entered. */
export const STATUS_TIMESTAMP = {
  in_progress: 'inProgressAt',
  finalizing: 'finalizingAt',
  completed: 'completedAt',
  failed: 'failedAt',
  expired: 'expiredAt',
  cancelling: 'cancellingAt',
  cancelled: 'cancelledAt',
} as const satisfies Partial<Record<BatchStatus, string>>;

export const BATCH_ENDPOINTS = ['/v1/chat/completions', '/v1/completions', '/v1/embeddings'] as const;
export type BatchEndpoint = (typeof BATCH_ENDPOINTS)[number];
