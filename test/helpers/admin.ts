import { request } from 'node:http'

// Calling the admin API from a test, as curl or a script would: the one way every test does it.

export interface AdminReply<Body = Record<string, unknown>> {
  status: number
  headers: Headers
  /** The JSON body ({} when there is none). */
  body: Body
}

export interface AdminCall {
  /** GET, or POST when there is a body. */
  method?: string
  /** Sent as JSON; a string is sent as it is, so a test can send what is not JSON. */
  body?: unknown
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string
  /** The whole Authorization header, for the schemes and spellings a test tries that are not a bearer token. */
  authorization?: string
  headers?: Record<string, string>
  /** The client's own loopback address (127.0.0.0/8), as separate clients would have. */
  from?: string
}

/** A call that hangs fails the test saying so, before the test's own timeout hides which call it was. */
const TIMEOUT_MS = 10_000

/**
 * One call to the admin API. node:http rather than fetch: it sends the path as given and can pick the client's
 * address. A new connection each time (no keep-alive), so a proxy restarted on the same port between two calls
 * is never reached through a connection to the old one.
 */
export function callAdmin<Body = Record<string, unknown>>(
  admin: string,
  path: string,
  call: AdminCall = {},
): Promise<AdminReply<Body>> {
  const payload =
    call.body === undefined
      ? undefined
      : typeof call.body === 'string'
        ? call.body
        : JSON.stringify(call.body)
  const method = call.method ?? (payload === undefined ? 'GET' : 'POST')
  const authorization = call.authorization ?? (call.token === undefined ? undefined : `Bearer ${call.token}`)
  const { hostname, port } = new URL(admin)
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: hostname,
        port,
        path,
        method,
        agent: false,
        timeout: TIMEOUT_MS,
        ...(call.from === undefined ? {} : { localAddress: call.from }),
        headers: {
          ...(payload === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
          ...(authorization === undefined ? {} : { authorization }),
          ...call.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          const status = res.statusCode ?? 0
          const headers = new Headers()
          for (let i = 0; i < res.rawHeaders.length; i += 2)
            headers.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!)
          try {
            resolve({ status, headers, body: (text === '' ? {} : JSON.parse(text)) as Body })
          } catch {
            reject(
              new Error(
                `${method} ${path} answered ${status} with a body that is not JSON: ${text.slice(0, 200)}`,
              ),
            )
          }
        })
        res.on('error', reject)
      },
    )
    req.on('timeout', () =>
      req.destroy(new Error(`${method} ${admin}${path} had no answer in ${TIMEOUT_MS} ms`)),
    )
    req.on('error', reject)
    req.end(payload)
  })
}

export function adminGet<Body = Record<string, unknown>>(
  admin: string,
  path: string,
): Promise<AdminReply<Body>> {
  return callAdmin<Body>(admin, path)
}

export function adminPost<Body = Record<string, unknown>>(
  admin: string,
  path: string,
  body: unknown,
  token?: string,
): Promise<AdminReply<Body>> {
  return callAdmin<Body>(admin, path, { method: 'POST', body, ...(token ? { token } : {}) })
}

/** The BG_* code of an error answer. */
export function errorCode(reply: AdminReply<unknown>): string | undefined {
  return (reply.body as { error?: { code?: string } }).error?.code
}
