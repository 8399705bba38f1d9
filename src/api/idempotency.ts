import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import type { FastifyRequest } from 'fastify';
import { ApiError } from './errors.js';
import type { FileStorage } from '../store/file-storage.js';
import type { FileRow } from '../store/files-repo.js';

const IDEMPOTENCY_KEY_RE = /^[\x21-\x7e]{1,255}$/;

/** The request's Idempotency-Key header, checked; undefined when absent. */
export function readIdempotencyKey(req: FastifyRequest): string | undefined {
  const key = req.headers['idempotency-key'];
  if (key === undefined) return undefined;
  if (typeof key !== 'string' || !IDEMPOTENCY_KEY_RE.test(key)) {
    throw new ApiError(
      'invalid_request',
      'The Idempotency-Key header must be 1 to 255 printable ASCII characters.',
      'Idempotency-Key',
    );
  }
  return key;
}

async function sha256Of(storage: FileStorage, id: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(storage.createReadStream(id), hash);
  return hash.digest('hex');
}

/**
 * An upload that reused the Idempotency-Key of `prior`: a true retry (same purpose, name and
 * bytes) gets `prior` back; anything else is a 409. Only this rare path reads both files.
 */
export async function matchRetriedUpload(
  storage: FileStorage,
  prior: FileRow,
  upload: { id: string; filename: string; bytes: number; purpose: string },
): Promise<FileRow> {
  const same =
    prior.purpose === upload.purpose &&
    prior.filename === upload.filename &&
    prior.bytes === upload.bytes &&
    (await sha256Of(storage, prior.id)) === (await sha256Of(storage, upload.id));
  if (!same) {
    throw new ApiError(
      'idempotency_conflict',
      `This Idempotency-Key was already used to upload ${prior.id}, with a different file, filename or purpose. Use a new key for a new upload.`,
      'Idempotency-Key',
    );
  }
  return prior;
}
