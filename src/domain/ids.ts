import { randomBytes } from 'node:crypto';

function token(n = 24): string {
  // base64url without - and _ so ids stay one "word" for grep and double-click.
  return randomBytes(n).toString('base64url').replace(/[-_]/g, '').slice(0, n);
}

export const newFileId = () => `file-${token()}`;
export const newBatchId = () => `batch_${token()}`;
export const newBatchRequestId = () => `batch_req_${token()}`;
export const newRequestId = () => `req_${token()}`;

export const FILE_ID_RE = /^file-[A-Za-z0-9]{1,64}$/;
export const BATCH_ID_RE = /^batch_[A-Za-z0-9]{1,64}$/;
