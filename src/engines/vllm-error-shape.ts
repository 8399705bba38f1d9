/** vLLM's flat error shape: {"object":"error","message":...,"type":...,"param":null,"code":status}. */

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

export const badRequest = (message: string) => new ApiError(400, 'BadRequestError', message);
export const notFound = (message: string) => new ApiError(404, 'NotFoundError', message);

export function errorBody(status: number, type: string, message: string): string {
  return JSON.stringify({ object: 'error', message, type, param: null, code: status });
}
