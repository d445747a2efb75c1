import type { IncomingMessage, ServerResponse } from 'node:http'
import { BlueGreenError } from '../errors.ts'

export const MAX_BODY_BYTES = 64 * 1024

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value)
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  })
  res.end(body)
}

/** Reads and parses a JSON object body, refusing anything larger than MAX_BODY_BYTES before buffering it. */
export async function readJsonObject(req: IncomingMessage): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length'] ?? 0)
  if (declared > MAX_BODY_BYTES) throw tooLarge()
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_BODY_BYTES) throw tooLarge()
    chunks.push(chunk)
  }
  const text = Buffer.concat(chunks).toString('utf8').trim()
  if (text === '') return {}
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new BlueGreenError('BG_BAD_REQUEST', 'the request body is not valid JSON', 400)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new BlueGreenError('BG_BAD_REQUEST', 'the request body must be a JSON object', 400)
  }
  return value as Record<string, unknown>
}

function tooLarge(): BlueGreenError {
  return new BlueGreenError(
    'BG_BODY_TOO_LARGE',
    `the request body is larger than ${MAX_BODY_BYTES} bytes`,
    413,
  )
}

/** Refuses fields the endpoint does not know: a typo such as "expectedGeneraton" must not pass silently. */
export function onlyFields(body: Record<string, unknown>, allowed: readonly string[]): void {
  const unknown = Object.keys(body).filter((key) => !allowed.includes(key))
  if (unknown.length > 0) {
    throw new BlueGreenError(
      'BG_BAD_REQUEST',
      `unknown field(s) ${unknown.map((key) => JSON.stringify(key)).join(', ')}; expected: ${allowed.join(', ')}`,
      400,
    )
  }
}

export function optionalGeneration(body: Record<string, unknown>): number | undefined {
  const value = body.expectedGeneration
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new BlueGreenError('BG_BAD_REQUEST', 'expectedGeneration must be a non-negative integer', 400)
  }
  return value
}

export function optionalString(
  body: Record<string, unknown>,
  field: string,
  maxLength = 500,
): string | undefined {
  const value = body[field]
  if (value === undefined) return undefined
  if (typeof value !== 'string' || value.length > maxLength) {
    throw new BlueGreenError(
      'BG_BAD_REQUEST',
      `${field} must be a string of at most ${maxLength} characters`,
      400,
    )
  }
  return value
}

export function optionalBoolean(body: Record<string, unknown>, field: string): boolean | undefined {
  const value = body[field]
  if (value === undefined) return undefined
  if (typeof value !== 'boolean')
    throw new BlueGreenError('BG_BAD_REQUEST', `${field} must be true or false`, 400)
  return value
}
