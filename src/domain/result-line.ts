import { newBatchRequestId } from './ids.js';

/**
 * Builds output/error file lines (see test/fixtures/openai/batch-lines.yaml). The engine's body
 * is embedded as the JSON text it came in: no parse/stringify round trip per result.
 */
export function responseLine(customId: string, status: number, requestId: string, bodyJson: string): string {
  return `{"id":"${newBatchRequestId()}","custom_id":${JSON.stringify(customId)},"response":{"status_code":${status},"request_id":${JSON.stringify(requestId)},"body":${bodyJson}},"error":null}`;
}

/** A request that never got an HTTP answer: cancelled, expired, or the engine could not be reached. */
export function errorOnlyLine(customId: string, code: string, message: string): string {
  return JSON.stringify({ id: newBatchRequestId(), custom_id: customId, response: null, error: { code, message } });
}

export const isSuccess = (status: number) => status >= 200 && status < 300;
