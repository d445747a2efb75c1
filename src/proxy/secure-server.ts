import type { IncomingMessage, ServerResponse } from 'node:http'
import { createSecureServer, type Http2SecureServer, type Http2Session } from 'node:http2'
import { createServer as createHttpsServer, type Server as HttpsServer, type ServerOptions } from 'node:https'
import type { TLSSocket } from 'node:tls'
import type { ListenerTlsConfig } from '../config/types.ts'
import type { Logger } from '../log.ts'
import type { CertificateStore } from './certificates.ts'

export interface SecureServerOptions {
  tls: ListenerTlsConfig
  certificates: CertificateStore
  /** The HTTP/1.1 options (timeouts, the upgrade callback) the plain listener has too. */
  http1: ServerOptions
  /** An HTTP/2 connection with no stream open this long is closed (proxy.timeouts.clientIdle). */
  clientIdle: number
  logger: Logger
  /**
   * The request handler, for HTTP/1.1 requests and HTTP/2 streams alike: Node's compat API gives a stream a request
   * and a response with every member the handler and the forwarder use (proxy/server.ts, http-forward.ts).
   */
  handler: (req: IncomingMessage, res: ServerResponse) => void
}

/**
 * The public listener over TLS: with tls.http2 on (the default), HTTP/2 for clients that offer h2 in ALPN and
 * HTTP/1.1 for the rest, WebSockets among them; else HTTPS with HTTP/1.1 only. The HTTP/2 limits bound what one
 * connection may hold; Node itself answers the known floods: a client that resets streams as fast as it opens them
 * (rapid reset, CVE-2023-44487) or sends endless CONTINUATION frames gets a GOAWAY and its connection closed
 * (README "TLS and HTTP/2").
 */
export function createTlsServer(options: SecureServerOptions): {
  server: Http2SecureServer | HttpsServer
  connections: SecureConnections
} {
  const { tls, certificates, http1, logger } = options
  const secure = { ...certificates.serverOptions(), ...http1 }
  const connections = new SecureConnections(options.clientIdle, logger)
  const server = tls.http2.enabled
    ? createSecureServer(
        {
          ...secure,
          allowHTTP1: true,
          settings: {
            maxConcurrentStreams: tls.http2.maxConcurrentStreams,
            maxHeaderListSize: tls.http2.maxHeaderListSize,
          },
          maxSessionInvalidFrames: tls.http2.maxSessionInvalidFrames,
          maxSessionRejectedStreams: tls.http2.maxSessionRejectedStreams,
        },
        options.handler as never,
      )
    : createHttpsServer(secure, options.handler)
  certificates.attach(server)
  server.on('secureConnection', connections.socketOpened)
  server.on('session', connections.sessionOpened)
  return { server, connections }
}

/**
 * The TLS sockets and HTTP/2 sessions open, which an HTTP/2 server does not close for a drain by itself, and the
 * idle timeout of HTTP/2 connections.
 */
export class SecureConnections {
  readonly #sessions = new Set<Http2Session>()
  readonly #sockets = new Set<TLSSocket>()
  #clientIdle: number
  readonly #logger: Logger
  #closing = false

  constructor(clientIdle: number, logger: Logger) {
    this.#clientIdle = clientIdle
    this.#logger = logger
  }

  /** A reload's clientIdle, for connections that go idle from now on. */
  setClientIdle(clientIdle: number): void {
    this.#clientIdle = clientIdle
  }

  /** A GOAWAY to every HTTP/2 connection, now and as they come: no new streams, closed once theirs are done. */
  goAway(): void {
    this.#closing = true
    for (const session of this.#sessions) session.close()
  }

  /** Closes whatever is still open (a drain's grace period is over). */
  destroy(): void {
    for (const session of this.#sessions) session.destroy()
    for (const socket of this.#sockets) socket.destroy()
  }

  readonly socketOpened = (socket: TLSSocket): void => {
    this.#sockets.add(socket)
    socket.once('close', () => this.#sockets.delete(socket))
    socket.on('error', (error) => this.#logger.debug({ err: error }, 'TLS client socket error'))
  }

  readonly sessionOpened = (session: Http2Session): void => {
    this.#sessions.add(session)
    session.once('close', () => this.#sessions.delete(session))
    session.on('error', (error) => this.#logger.debug({ err: error }, 'HTTP/2 session error'))
    // An idle connection closes after clientIdle, as HTTP/1.1 keep-alive ones do; one with streams open stays.
    // The timer is set again when the last stream closes: one that fired during a long stream is not re-armed.
    let open = 0
    session.on('stream', (stream) => {
      open++
      stream.once('close', () => {
        if (--open === 0 && !session.closed) session.setTimeout(this.#clientIdle)
      })
    })
    session.on('timeout', () => {
      if (open === 0) session.close()
    })
    session.setTimeout(this.#clientIdle)
    if (this.#closing) session.close()
  }
}
