import { execFile } from 'node:child_process'
import { type ClientHttp2Session, connect as connectHttp2, type IncomingHttpHeaders } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import { connect as connectTls, type PeerCertificate, type TLSSocket } from 'node:tls'
import { promisify } from 'node:util'
import pino, { type Logger } from 'pino'

const run = promisify(execFile)

/** A logger whose lines a test can read: every line as parsed JSON. */
export function capturingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = []
  const logger = pino(
    { level: 'debug' },
    { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
  )
  return { logger, lines }
}

export interface Http2Answer {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

/** One request on an open HTTP/2 session, read to its end. */
export function http2Request(
  session: ClientHttp2Session,
  headers: Record<string, string | string[]> = {},
  body?: string | Buffer[],
): Promise<Http2Answer> {
  return new Promise((resolve, reject) => {
    // CONNECT has no :path (RFC 9113 8.5).
    const path = headers[':method'] === 'CONNECT' ? {} : { ':path': '/' }
    const stream = session.request({ ...path, ...headers }, { endStream: body === undefined })
    let text = ''
    let responseHeaders: IncomingHttpHeaders = {}
    stream.setEncoding('utf8')
    stream.on('response', (received) => {
      responseHeaders = received
    })
    stream.on('data', (chunk: string) => {
      text += chunk
    })
    stream.once('end', () =>
      resolve({ status: Number(responseHeaders[':status']), headers: responseHeaders, body: text }),
    )
    stream.once('error', reject)
    if (typeof body === 'string') stream.end(body)
    else if (body !== undefined) {
      // Written in pieces, with no content-length: the body is framed by DATA frames only.
      for (const piece of body) stream.write(piece)
      stream.end()
    }
  })
}

/** An HTTP/2 session to `port` trusting `ca`; `servername` picks the certificate (SNI). */
export async function openHttp2(
  port: number,
  ca: string,
  servername = 'localhost',
): Promise<ClientHttp2Session> {
  const session = connectHttp2(`https://127.0.0.1:${port}`, { ca, servername })
  session.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve())
    session.once('error', reject)
  })
  return session
}

export interface HttpsAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
  /** The protocol ALPN chose: false here, the https module offers none. */
  alpn: string | false
}

/** An HTTP/1.1 request over TLS (node:https offers no ALPN at all, as older clients do not). */
export function httpsGet(
  port: number,
  ca: string,
  path = '/',
  headers: Record<string, string> = {},
): Promise<HttpsAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      { host: '127.0.0.1', port, path, ca, servername: 'localhost', headers, agent: false },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          body += chunk
        })
        res.once('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            alpn: (res.socket as TLSSocket).alpnProtocol ?? false,
          }),
        )
      },
    )
    req.once('error', reject)
    req.end()
  })
}

/** The certificate a new TLS connection is shown for `servername`. */
export function peerCertificate(port: number, ca: string, servername: string): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connectTls(
      { host: '127.0.0.1', port, ca, servername, ALPNProtocols: ['http/1.1'] },
      () => {
        const certificate = socket.getPeerCertificate()
        socket.destroy()
        resolve(certificate)
      },
    )
    socket.once('error', reject)
  })
}

/** curl, with its exit code, output and the HTTP version it used (`%{http_version}`). */
export async function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('curl', ['-sS', '--max-time', '10', ...args])
    return { code: 0, stdout, stderr }
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string }
    return { code: failed.code ?? 1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' }
  }
}
