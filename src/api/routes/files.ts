import { once } from 'node:events';
import { fstat } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { promisify } from 'node:util';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { MultipartFile, MultipartValue } from '@fastify/multipart';
import type { z } from 'zod';
import { ApiError } from '../errors.js';
import { FILE_ID_RE, newFileId } from '../../domain/ids.js';
import { StorageFullError, StorageLimitError } from '../../store/file-storage.js';
import { watchUploadIdle } from '../upload-idle.js';
import type { FileRow } from '../../store/files-repo.js';
import { canSee, listScope, ownerFor } from '../../auth/principal.js';
import { matchRetriedUpload, readIdempotencyKey } from '../idempotency.js';
import {
  DEFAULT_BATCH_FILE_TTL_S,
  UPLOAD_FIELDS,
  UPLOAD_PURPOSES,
  expiresAfterAnchorSchema,
  expiresAfterSecondsSchema,
  fileIdParamsSchema,
  listFilesQuerySchema,
  sanitizeFilename,
  toDeletedFile,
  toFileList,
  toFileObject,
  uploadPurposeSchema,
  type UploadField,
} from '../schemas/files.js';

const fstatAsync = promisify(fstat);
const nowS = () => Math.floor(Date.now() / 1000);

const FIELD_PARAM: Record<UploadField, string> = {
  purpose: 'purpose',
  'expires_after[anchor]': 'expires_after.anchor',
  'expires_after[seconds]': 'expires_after.seconds',
};

function notFound(id: string): ApiError {
  return new ApiError(
    'file_not_found',
    `No file with id ${id.slice(0, 100)}. List your files with GET /v1/files.`,
    'id',
  );
}

function zodToApiError(error: z.ZodError): ApiError {
  const issue = error.issues[0];
  const param = issue?.path.map(String).join('.') || null;
  return new ApiError('invalid_request', `Invalid ${param ?? 'request'}: ${issue?.message ?? 'malformed'}.`, param);
}

function humanBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return u === 0 ? `${n} bytes` : `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[u]}`;
}

/**
 * After an upload is refused the rest of the body is still on its way: stop feeding the
 * multipart parser (it may be stalled on a destroyed file stream) and discard the remainder,
 * so the client reads our error instead of a reset connection.
 */
function discardRest(raw: IncomingMessage): void {
  if (raw.complete || raw.destroyed) return;
  raw.unpipe();
  raw.resume();
}

/** How long a refused upload's connection stays half-open, so the client can read the error. */
const LINGER_MS = 2000;

/**
 * The rest of a refused body is not wanted: without this, a client blocked writing it (a 64 MB
 * body against a 1 MB limit) would hold the socket. Once the error is sent the server
 * half-closes (the client reads the response and the end of the stream), and drops the socket
 * a moment later. Closing at once (Connection: close) resets a connection the client is still
 * writing to, and the client can lose the response.
 */
function closeAfterReply(res: ServerResponse, raw: IncomingMessage): void {
  res.once('finish', () => {
    const socket = raw.socket;
    if (!socket || socket.destroyed) return;
    socket.end();
    setTimeout(() => socket.destroy(), LINGER_MS).unref();
  });
}

/** Errors raised by the multipart parser itself (limits, malformed bodies), in our catalogue. */
function multipartError(err: unknown, maxUploadBytes: number): ApiError {
  const e = err as { code?: string; message?: string };
  switch (e.code) {
    case 'FST_FILES_LIMIT':
      return new ApiError(
        'invalid_multipart',
        'The request has more than one file part. Upload one file per request, in a part named "file".',
        'file',
      );
    case 'FST_FIELDS_LIMIT':
    case 'FST_PARTS_LIMIT':
      return new ApiError(
        'invalid_multipart',
        `The request has too many parts. Send a "file" part and the fields ${UPLOAD_FIELDS.join(', ')}.`,
      );
    case 'FST_REQ_FILE_TOO_LARGE':
      return tooLarge(maxUploadBytes, undefined);
    case 'FST_PROTO_VIOLATION':
      return new ApiError(
        'invalid_multipart',
        'A multipart field name is not allowed. Send a "file" part and a "purpose" field.',
      );
    default:
      return new ApiError(
        'invalid_multipart',
        `The multipart body could not be read (${e.message ?? 'malformed'}). Send multipart/form-data with a "file" part and a "purpose" field.`,
      );
  }
}

function tooLarge(limit: number, purpose: string | undefined): ApiError {
  const which = purpose === 'batch' ? 'for purpose "batch" (MAX_BATCH_FILE_BYTES)' : 'for an upload (MAX_UPLOAD_BYTES)';
  const hint = purpose === 'batch' ? 'Split the requests into several smaller batch files.' : 'Upload a smaller file.';
  return new ApiError(
    'file_too_large',
    `The file is larger than ${humanBytes(limit)} (${limit} bytes), the most this server accepts ${which}. ${hint}`,
    'file',
  );
}

function storageError(err: unknown, limit: number, purpose: string | undefined, file: MultipartFile['file']): unknown {
  if (err instanceof StorageLimitError) return tooLarge(limit, purpose);
  if (err instanceof StorageFullError) {
    return new ApiError(
      'insufficient_storage',
      "The server's disk is full; free space in DATA_DIR or delete files you no longer need (DELETE /v1/files/{id}), then retry.",
    );
  }
  const code = (err as { code?: string }).code;
  // busboy emits "Part terminated early due to unexpected end of multipart data" on the file
  // stream when a body ends inside a file part, without marking the stream errored (was a 500).
  if (
    file.errored ||
    code === 'ERR_STREAM_PREMATURE_CLOSE' ||
    /terminated early|unexpected end/i.test((err as Error).message ?? '')
  ) {
    return new ApiError(
      'invalid_multipart',
      `The upload ended before the file part was complete (${(err as Error).message}). Check the connection and retry.`,
      'file',
    );
  }
  return err;
}

/** Percent-encodes a header parameter value (RFC 5987 ext-value): ASCII out, no quotes to escape. */
function rfc5987(s: string): string {
  return encodeURIComponent(s).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function isUploadField(name: string): name is UploadField {
  return (UPLOAD_FIELDS as readonly string[]).includes(name);
}

/** Checks one text field as soon as it arrives, so a bad purpose is refused before any bytes stream. */
function acceptField(fields: Map<UploadField, string>, part: MultipartValue): void {
  const name = part.fieldname;
  if (name === 'file') {
    throw new ApiError(
      'missing_required_parameter',
      'The "file" part has no filename, so it was read as a text field. Send the bytes as a file part (curl -F file=@input.jsonl).',
      'file',
    );
  }
  if (!isUploadField(name)) {
    throw new ApiError(
      'invalid_request',
      `Unknown parameter "${name.slice(0, 100)}". POST /v1/files accepts file, purpose, expires_after[anchor] and expires_after[seconds].`,
      name.slice(0, 100),
    );
  }
  const param = FIELD_PARAM[name];
  if (fields.has(name))
    throw new ApiError('invalid_request', `"${name}" was sent more than once. Send it once.`, param);
  if (part.valueTruncated) throw new ApiError('invalid_request', `"${name}" is too long.`, param);
  const value = String(part.value);
  if (name === 'purpose' && !uploadPurposeSchema.safeParse(value).success) {
    const why =
      value === 'batch_output' ? '"batch_output" files are written by the server and cannot be uploaded. ' : '';
    throw new ApiError(
      'invalid_purpose',
      `Invalid purpose "${value.slice(0, 64)}". ${why}Use one of: ${UPLOAD_PURPOSES.join(', ')}.`,
      'purpose',
    );
  }
  if (name === 'expires_after[anchor]' && !expiresAfterAnchorSchema.safeParse(value).success) {
    throw new ApiError(
      'invalid_request',
      `Invalid expires_after.anchor "${value.slice(0, 64)}". The only supported anchor is "created_at".`,
      param,
    );
  }
  if (name === 'expires_after[seconds]' && !expiresAfterSecondsSchema.safeParse(value).success) {
    throw new ApiError(
      'invalid_request',
      `Invalid expires_after.seconds "${value.slice(0, 64)}". Use a whole number of seconds between 3600 (1 hour) and 2592000 (30 days).`,
      param,
    );
  }
  fields.set(name, value);
}

/** Expiry from the validated fields: explicit expires_after, else 30 days for batch files, else never. */
function expiryOf(fields: Map<UploadField, string>, purpose: string, createdAt: number): number | null {
  const anchor = fields.get('expires_after[anchor]');
  const seconds = fields.get('expires_after[seconds]');
  if (anchor === undefined && seconds === undefined)
    return purpose === 'batch' ? createdAt + DEFAULT_BATCH_FILE_TTL_S : null;
  if (anchor === undefined)
    throw new ApiError(
      'missing_required_parameter',
      'expires_after.seconds needs expires_after.anchor ("created_at").',
      'expires_after.anchor',
    );
  if (seconds === undefined)
    throw new ApiError(
      'missing_required_parameter',
      'expires_after.anchor needs expires_after.seconds (3600 to 2592000).',
      'expires_after.seconds',
    );
  return createdAt + Number(seconds);
}

/**
 * Files API. Deleting a file that an active batch reads succeeds at once (the file leaves the
 * API), but its bytes stay on disk until that batch ends; the janitor (control/file-janitor.ts)
 * removes them then. Any other delete removes the bytes immediately.
 */
export default async function filesRoutes(app: FastifyInstance): Promise<void> {
  /** Another project's file answers exactly like a missing one. */
  function lookup(request: FastifyRequest, id: string): FileRow {
    const row = FILE_ID_RE.test(id) ? app.deps.files.get(id) : undefined;
    if (!row || !canSee(request.principal, row.owner)) throw notFound(id);
    return row;
  }

  function idParam(request: FastifyRequest): string {
    return fileIdParamsSchema.parse(request.params).id;
  }

  app.post('/files', async (request, reply) => {
    if (!request.isMultipart()) {
      const ct = request.headers['content-type'];
      const got = ct ? `not ${ct.slice(0, 100)}` : 'and the request has no Content-Type';
      throw new ApiError(
        'unsupported_media_type',
        `POST /v1/files takes multipart/form-data, ${got}. Send the bytes as a "file" part and a "purpose" field (curl -F purpose=batch -F file=@input.jsonl).`,
      );
    }
    const { storage, files } = app.deps;
    const env = app.deps.config.env;
    const idempotencyKey = readIdempotencyKey(request);
    const owner = ownerFor(request.principal);
    const id = newFileId();
    const fields = new Map<UploadField, string>();
    let upload: { filename: string; bytes: number } | undefined;
    const idle = watchUploadIdle(request.raw, env.UPLOAD_IDLE_TIMEOUT_MS);
    try {
      // One byte above our own limit, so our counter (which deletes the partial file) fires first.
      const parts = request.parts({ limits: { fileSize: env.MAX_UPLOAD_BYTES + 1 } });
      for (;;) {
        let step: IteratorResult<MultipartFile | MultipartValue>;
        try {
          step = await parts.next();
        } catch (err) {
          throw multipartError(err, env.MAX_UPLOAD_BYTES);
        }
        if (step.done) break;
        const part = step.value;
        // A part whose Content-Disposition has no readable name (fuzzing found a 500 here).
        if (typeof part.fieldname !== 'string' || part.fieldname === '') {
          throw new ApiError(
            'invalid_multipart',
            'A multipart part has no name. Give every part a Content-Disposition: form-data; name="..." header: a "file" part and a "purpose" field.',
          );
        }
        if (part.type === 'field') {
          acceptField(fields, part);
          continue;
        }
        if (part.fieldname !== 'file') {
          const name = part.fieldname.slice(0, 100);
          throw new ApiError(
            'invalid_request',
            `Unknown file part "${name}". Send the bytes in a part named "file".`,
            name,
          );
        }
        // Purpose known already: enforce its limit while streaming. Otherwise the larger one, checked again below.
        const purpose = fields.get('purpose');
        const limit = purpose === 'batch' ? env.MAX_BATCH_FILE_BYTES : env.MAX_UPLOAD_BYTES;
        try {
          upload = { filename: sanitizeFilename(part.filename), bytes: await storage.save(id, part.file, limit) };
        } catch (err) {
          throw storageError(err, limit, purpose, part.file);
        }
        if (part.file.truncated) throw tooLarge(env.MAX_UPLOAD_BYTES, purpose);
      }

      if (!upload)
        throw new ApiError(
          'missing_required_parameter',
          'Missing the "file" part. Send the bytes as a multipart file part named "file" (curl -F file=@input.jsonl).',
          'file',
        );
      const purpose = fields.get('purpose');
      if (!purpose)
        throw new ApiError(
          'missing_required_parameter',
          `Missing "purpose". Use one of: ${UPLOAD_PURPOSES.join(', ')}.`,
          'purpose',
        );
      if (purpose === 'batch' && upload.bytes > env.MAX_BATCH_FILE_BYTES)
        throw tooLarge(env.MAX_BATCH_FILE_BYTES, purpose);
      // Looked up after the bytes are in, and no await until the insert below: of two concurrent
      // uploads with one key, the second always finds the first.
      const prior = idempotencyKey === undefined ? undefined : files.findByIdempotencyKey(owner, idempotencyKey);
      if (prior) {
        const same = await matchRetriedUpload(storage, prior, { id, purpose, ...upload });
        await storage.remove(id);
        return toFileObject(same);
      }
      const createdAt = nowS();
      const row: FileRow = {
        id,
        bytes: upload.bytes,
        createdAt,
        expiresAt: expiryOf(fields, purpose, createdAt),
        filename: upload.filename,
        purpose,
        deletedAt: null,
        owner,
        idempotencyKey: idempotencyKey ?? null,
      };
      files.insert(row);
      request.log.info({ fileId: id, bytes: row.bytes, purpose }, 'file uploaded');
      return toFileObject(row);
    } catch (err) {
      discardRest(request.raw);
      if (!request.raw.complete) closeAfterReply(reply.raw, request.raw);
      if (upload)
        await storage
          .remove(id)
          .catch((e: unknown) => request.log.warn({ err: e, fileId: id }, 'could not remove refused upload'));
      if (idle.fired) {
        // The client stalled: answered, then the connection is closed (see above).
        throw new ApiError(
          'request_timeout',
          `No bytes of the upload arrived for ${env.UPLOAD_IDLE_TIMEOUT_MS / 1000} s (UPLOAD_IDLE_TIMEOUT_MS), so it was dropped. Check the connection and upload again.`,
          'file',
        );
      }
      throw err;
    } finally {
      idle.stop();
    }
  });

  app.get('/files', async (request) => {
    const parsed = listFilesQuerySchema.safeParse(request.query ?? {});
    if (!parsed.success) throw zodToApiError(parsed.error);
    const q = parsed.data;
    const page = app.deps.files.list({ ...q, owner: listScope(request.principal) });
    if (page.unknownAfter) {
      throw new ApiError(
        'invalid_request',
        `No file with id ${String(q.after).slice(0, 100)} to page after. Pass the last id of the previous page, or leave "after" out to start at the beginning.`,
        'after',
      );
    }
    return toFileList(page.rows, page.hasMore);
  });

  app.get('/files/:id', async (request) => toFileObject(lookup(request, idParam(request))));

  app.get('/files/:id/content', async (request, reply) => {
    const row = lookup(request, idParam(request));
    // Open before answering: once the fd is held, a concurrent delete cannot cut the body short.
    const stream = app.deps.storage.createReadStream(row.id);
    let size: number;
    try {
      await once(stream, 'ready');
      size = (await fstatAsync((stream as unknown as { fd: number }).fd)).size;
    } catch (err) {
      stream.destroy();
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw notFound(row.id);
      throw err;
    }
    return reply
      .header(
        'content-type',
        row.filename.toLowerCase().endsWith('.jsonl') ? 'application/jsonl' : 'application/octet-stream',
      )
      .header('content-length', size)
      .header('content-disposition', `attachment; filename*=UTF-8''${rfc5987(row.filename)}`)
      .send(stream);
  });

  app.delete('/files/:id', async (request) => {
    const { files, storage } = app.deps;
    const row = lookup(request, idParam(request));
    // No await between these two: a batch cannot start reading the file in between.
    if (!files.markDeleted(row.id, nowS())) throw notFound(row.id);
    if (files.isInputOfActiveBatch(row.id)) {
      request.log.info({ fileId: row.id }, 'file deleted; bytes kept until its batch ends');
    } else {
      try {
        await storage.remove(row.id);
        files.purge(row.id);
      } catch (err) {
        request.log.warn({ err, fileId: row.id }, 'file deleted; bytes left for the janitor');
      }
    }
    return toDeletedFile(row.id);
  });
}
