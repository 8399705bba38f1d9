import { z } from 'zod';
import type { FileRow } from '../../store/files-repo.js';

/** Purposes a client may upload with. `batch_output` is only ever written by the server. */
export const UPLOAD_PURPOSES = ['batch', 'assistants', 'fine-tune', 'vision', 'user_data', 'evals'] as const;
export type UploadPurpose = (typeof UPLOAD_PURPOSES)[number];

export const MIN_EXPIRES_AFTER_S = 3600;
export const MAX_EXPIRES_AFTER_S = 2_592_000;
/** OpenAI: files with purpose `batch` expire after 30 days unless told otherwise. */
export const DEFAULT_BATCH_FILE_TTL_S = 2_592_000;

/** The multipart text fields POST /v1/files accepts (the SDK bracket-encodes expires_after). */
export const UPLOAD_FIELDS = ['purpose', 'expires_after[anchor]', 'expires_after[seconds]'] as const;
export type UploadField = (typeof UPLOAD_FIELDS)[number];

export const uploadPurposeSchema = z.enum(UPLOAD_PURPOSES);
export const expiresAfterAnchorSchema = z.literal('created_at');
export const expiresAfterSecondsSchema = z
  .string()
  .regex(/^\d{1,10}$/, 'must be a whole number of seconds')
  .transform(Number)
  .pipe(z.number().int().min(MIN_EXPIRES_AFTER_S).max(MAX_EXPIRES_AFTER_S));

/** The validated text fields of an upload, once all parts have arrived. */
export const uploadFieldsSchema = z
  .object({
    purpose: uploadPurposeSchema,
    'expires_after[anchor]': expiresAfterAnchorSchema.optional(),
    'expires_after[seconds]': expiresAfterSecondsSchema.optional(),
  })
  .strict();

export const listFilesQuerySchema = z.object({
  purpose: z.string().min(1).max(64).optional(),
  limit: z.coerce.number().int().min(1).max(10_000).default(10_000),
  order: z.enum(['asc', 'desc']).default('desc'),
  after: z.string().min(1).max(200).optional(),
});
export type ListFilesQueryInput = z.infer<typeof listFilesQuerySchema>;

export const fileIdParamsSchema = z.object({ id: z.string() });

/** The OpenAIFile wire object: every key, in the spec's order. */
export function toFileObject(row: FileRow) {
  return {
    id: row.id,
    object: 'file' as const,
    bytes: row.bytes,
    created_at: row.createdAt,
    expires_at: row.expiresAt ?? null,
    filename: row.filename,
    purpose: row.purpose,
    status: 'processed' as const,
    status_details: null,
  };
}
export type FileObject = ReturnType<typeof toFileObject>;

export function toFileList(rows: FileRow[], hasMore: boolean) {
  return {
    object: 'list' as const,
    data: rows.map(toFileObject),
    first_id: rows[0]?.id ?? null,
    last_id: rows.at(-1)?.id ?? null,
    has_more: hasMore,
  };
}

export function toDeletedFile(id: string) {
  return { id, object: 'file' as const, deleted: true as const };
}

// eslint-disable-next-line no-control-regex -- on purpose: control characters are what a shown file name must not hold
const CONTROL_OR_BIDI = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
export const MAX_FILENAME_CHARS = 255;

/**
 * The client's file name made safe to display: last path component only, no control or
 * bidi-override characters, at most 255 characters. It is never used to build a path.
 */
export function sanitizeFilename(raw: string | undefined): string {
  const base = (raw ?? '').split(/[/\\]/).at(-1) ?? '';
  const clean = base.replace(CONTROL_OR_BIDI, '').trim();
  const capped = Array.from(clean).slice(0, MAX_FILENAME_CHARS).join('');
  return capped === '' || capped === '.' || capped === '..' ? 'file' : capped;
}
