import type { IncomingMessage, ServerResponse } from 'node:http'
import { BlueGreenError } from '../errors.ts'
import { checkedGeneration } from '../state/state.ts'

export const MAX_BODY_BYTES = 64 * 1024

/**
 * Every JSON answer, errors included (whose messages name the path asked for): data a browser never sniffs into a
 * page, runs nothing from, and never frames.
 */
export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value)
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  })
  res.end(body)
}

/**
 * Reads and parses a JSON object body, refusing anything larger than MAX_BODY_BYTES without buffering it.
 *
 * A body found too large while streaming is read to its end and dropped rather than cut off: destroying the
 * request would reset the connection under a client still sending, which then never sees the 413. The admin
 * listener's requestTimeout bounds how long such a client can keep sending.
 */
export async function readJsonObject(req: IncomingMessage): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length'] ?? 0)
  // Not read at all, so Node discards the body itself once the response is sent.
  if (declared > MAX_BODY_BYTES) throw tooLarge()
  const text = (await readBody(req)).toString('utf8').trim()
  if (text === '') return {}
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new BlueGreenError('BG_BAD_REQUEST', 'the request body is not valid JSON')
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new BlueGreenError('BG_BAD_REQUEST', 'the request body must be a JSON object')
  }
  return value as Record<string, unknown>
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const stop = () => {
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onError)
      req.off('close', onClose)
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size <= MAX_BODY_BYTES) {
        chunks.push(chunk)
        return
      }
      stop()
      req.resume()
      reject(tooLarge())
    }
    const onEnd = () => {
      stop()
      resolve(Buffer.concat(chunks))
    }
    const onError = () => {
      stop()
      reject(new BlueGreenError('BG_BAD_REQUEST', 'the client went away before sending the whole body'))
    }
    const onClose = onError
    req.on('data', onData)
    req.once('end', onEnd)
    req.once('error', onError)
    req.once('close', onClose)
  })
}

function tooLarge(): BlueGreenError {
  return new BlueGreenError('BG_BODY_TOO_LARGE', `the request body is larger than ${MAX_BODY_BYTES} bytes`)
}

/** Refuses fields the endpoint does not know: a typo such as "expectedGeneraton" must not pass silently. */
export function onlyFields(body: Record<string, unknown>, allowed: readonly string[]): void {
  const unknown = Object.keys(body).filter((key) => !allowed.includes(key))
  if (unknown.length > 0) {
    throw new BlueGreenError(
      'BG_BAD_REQUEST',
      `unknown field(s) ${unknown.map((key) => JSON.stringify(key)).join(', ')}; expected: ${allowed.join(', ')}`,
    )
  }
}

export function optionalGeneration(body: Record<string, unknown>): number | undefined {
  return checkedGeneration(body.expectedGeneration)
}

export function optionalString(
  body: Record<string, unknown>,
  field: string,
  maxLength = 500,
): string | undefined {
  const value = body[field]
  if (value === undefined) return undefined
  if (typeof value !== 'string' || value.length > maxLength) {
    throw new BlueGreenError('BG_BAD_REQUEST', `${field} must be a string of at most ${maxLength} characters`)
  }
  return value
}

export function optionalBoolean(body: Record<string, unknown>, field: string): boolean | undefined {
  const value = body[field]
  if (value === undefined) return undefined
  if (typeof value !== 'boolean') throw new BlueGreenError('BG_BAD_REQUEST', `${field} must be true or false`)
  return value
}
