import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { ADMIN_MARK } from './mark.ts'

// A small client of the admin API, for the CLI and for scripts.

export interface AdminClientOptions {
  url: string
  token?: string | undefined
  timeoutMs?: number
}

export class AdminCallError extends Error {
  readonly status: number
  readonly code: string

  constructor(status: number, code: string, message: string) {
    super(message)
    this.name = 'AdminCallError'
    this.status = status
    this.code = code
  }
}

/**
 * One call to the admin API. node:http rather than fetch: fetch refuses a list of "bad ports" (6000, 6666, ...)
 * that an operator may well have put the admin API on, and the CLI starts faster without undici.
 *
 * Only an answer with the admin API's mark is believed. A change is sent only after a GET, harmless on any server,
 * found the mark: a mistyped --admin (the proxy port) must not pass a POST /switch on to the application.
 */
export async function callAdmin(
  options: AdminClientOptions,
  method: 'GET' | 'POST' | 'DELETE',
  path: string,
  body?: unknown,
): Promise<unknown> {
  if (method !== 'GET') await answer(options, 'GET', '/healthz')
  const { status, text } = await answer(options, method, path, body)
  let parsed: unknown
  try {
    parsed = text === '' ? undefined : JSON.parse(text)
  } catch {
    parsed = undefined
  }
  if (status < 200 || status > 299) {
    const error = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error
    throw new AdminCallError(
      status,
      error?.code ?? `HTTP_${status}`,
      error?.message ?? `the admin API answered ${status}`,
    )
  }
  if (typeof parsed !== 'object' || parsed === null) {
    throw new AdminCallError(
      status,
      'BG_NOT_ADMIN_API',
      `${options.url}: the admin API answered ${method} ${path} with something other than a JSON object`,
    )
  }
  return parsed
}

/** One request, its answer refused unless it carries the mark. */
async function answer(
  options: AdminClientOptions,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; text: string }> {
  const url = new URL(path, options.url)
  const payload = body === undefined ? undefined : JSON.stringify(body)
  const headers: Record<string, string> = { accept: 'application/json' }
  if (payload !== undefined) {
    headers['content-type'] = 'application/json'
    headers['content-length'] = String(Buffer.byteLength(payload))
  }
  if (options.token) headers.authorization = `Bearer ${options.token}`
  let reply: { status: number; text: string; marked: boolean }
  try {
    reply = await send(url, method, headers, payload, options.timeoutMs ?? 30_000)
  } catch (error) {
    const cause = (error as { code?: string }).code ?? (error as Error).message
    throw new AdminCallError(
      0,
      'BG_ADMIN_UNREACHABLE',
      `cannot reach the admin API at ${options.url} (${cause})`,
    )
  }
  if (!reply.marked) {
    throw new AdminCallError(
      reply.status,
      'BG_NOT_ADMIN_API',
      `${options.url}: this is not a bluegreen admin API: ${method} ${path} answered ${reply.status} without the ${ADMIN_MARK} header (the proxy port, not the admin port?)`,
    )
  }
  return reply
}

function send(
  url: URL,
  method: string,
  headers: Record<string, string>,
  payload: string | undefined,
  timeoutMs: number,
): Promise<{ status: number; text: string; marked: boolean }> {
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          text: Buffer.concat(chunks).toString('utf8'),
          marked: res.headers[ADMIN_MARK] === '1',
        }),
      )
      res.on('error', reject)
    })
    req.on('timeout', () =>
      req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })),
    )
    req.on('error', reject)
    req.end(payload)
  })
}

/** One thing an admin event stream said: an event (id, kind, its data as sent), or a comment (a keep-alive). */
export interface StreamFrame {
  id?: string
  event?: string
  data?: string
  comment?: string
}

export interface OpenStream {
  /** Settles when the stream ends: the admin API closed it, or the connection broke. */
  ended: Promise<void>
  close(): void
}

/**
 * Opens GET /events/stream (Server-Sent Events), resuming after `lastEventId` when given, and passes on each frame
 * as it comes. Rejects, like callAdmin, when the stream cannot be opened: 404 from a proxy older than the stream.
 */
export function openEventStream(
  options: AdminClientOptions,
  lastEventId: string | undefined,
  onFrame: (frame: StreamFrame) => void,
): Promise<OpenStream> {
  const url = new URL('/events/stream', options.url)
  const headers: Record<string, string> = { accept: 'text/event-stream' }
  if (lastEventId !== undefined) headers['last-event-id'] = lastEventId
  if (options.token) headers.authorization = `Bearer ${options.token}`
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      if (res.headers[ADMIN_MARK] !== '1' || res.statusCode !== 200) {
        res.resume()
        const status = res.statusCode ?? 0
        const code = res.headers[ADMIN_MARK] === '1' ? `HTTP_${status}` : 'BG_NOT_ADMIN_API'
        reject(new AdminCallError(status, code, `${options.url}: GET /events/stream answered ${status}`))
        return
      }
      res.setEncoding('utf8')
      let pending = ''
      res.on('data', (chunk: string) => {
        pending += chunk
        for (let end = pending.indexOf('\n\n'); end !== -1; end = pending.indexOf('\n\n')) {
          onFrame(frameOf(pending.slice(0, end)))
          pending = pending.slice(end + 2)
        }
      })
      const ended = new Promise<void>((done) => {
        res.once('close', done)
        res.once('error', () => done())
      })
      resolve({ ended, close: () => req.destroy() })
    })
    req.on('error', (error: NodeJS.ErrnoException) =>
      reject(
        new AdminCallError(
          0,
          'BG_ADMIN_UNREACHABLE',
          `cannot reach the admin API at ${options.url} (${error.code ?? error.message})`,
        ),
      ),
    )
    req.end()
  })
}

function frameOf(block: string): StreamFrame {
  const frame: StreamFrame = {}
  for (const line of block.split('\n')) {
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '')
    if (field === '') frame.comment = value
    else if (field === 'id' || field === 'event') frame[field] = value
    else if (field === 'data') frame.data = frame.data === undefined ? value : `${frame.data}\n${value}`
  }
  return frame
}
