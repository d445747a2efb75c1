import type { ClientRequest, IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { createProxyServer, type ProxyServer } from 'http-proxy-3'
import type { Color } from '../colors.ts'
import type { Logger } from '../log.ts'
import type { Upstream } from '../routing/upstream.ts'
import { rawErrorResponse } from './respond.ts'
import { classifyUpstreamError } from './upstream-errors.ts'

export interface WebSocketForwarderOptions {
  colorHeader: string | null
  connectTimeout: number
  logger: Logger
  onUpstreamFailure: (upstream: Upstream, reason: string, error: Error) => void
  /** Each WebSocket from the moment it is forwarded until its client socket closes (for per-color counts). */
  onOpened?: (websocket: OpenWebSocket) => void
  onClosed?: (websocket: OpenWebSocket) => void
}

/** An open WebSocket through the proxy: it stays on the color it was opened on until either side closes it. */
export interface OpenWebSocket {
  color: Color
  upstream: Upstream
  socket: Duplex
}

const COLOR = Symbol('bluegreen.color')
const UPGRADED = Symbol('bluegreen.upgraded')
const CLIENT_GONE = Symbol('bluegreen.clientGone')
type TaggedRequest = IncomingMessage & { [COLOR]?: Color; [UPGRADED]?: boolean; [CLIENT_GONE]?: boolean }

/**
 * WebSocket upgrades through http-proxy-3. Every call passes an error callback: without one http-proxy-3 emits
 * 'error' on its server, and with no listener there that rethrows and takes the whole process down.
 */
export class WebSocketForwarder {
  readonly #proxy: ProxyServer
  readonly #options: WebSocketForwarderOptions
  readonly open = new Set<OpenWebSocket>()

  constructor(options: WebSocketForwarderOptions) {
    this.#options = options
    this.#proxy = createProxyServer({ ws: true, xfwd: false, proxyTimeout: 0, timeout: 0 })
    // A last resort: an error that reaches the server instead of a callback is logged, never thrown.
    this.#proxy.on('error', (error: Error) => options.logger.warn({ err: error }, 'websocket proxy error'))
    const { colorHeader } = options
    this.#proxy.on('proxyReqWs', (proxyReq: ClientRequest, req: TaggedRequest, socket: Duplex) => {
      // http-proxy-3 rebuilds the path through new URL(), which resolves /a/../b to /b; send it as the client did,
      // as HTTP requests are. The request line is written at end(), after this event.
      proxyReq.path = req.url ?? '/'
      // Both listeners run before http-proxy-3's own, which write the 101 or relay the upstream's other answer.
      proxyReq.on('upgrade', (proxyRes: IncomingMessage, proxySocket: Duplex) => {
        req[UPGRADED] = true
        if (socket.destroyed) proxySocket.destroy()
        else if (colorHeader !== null && req[COLOR]) proxyRes.headers[colorHeader] = req[COLOR]
      })
      proxyReq.on('response', (proxyRes: IncomingMessage) => {
        if (colorHeader !== null && req[COLOR]) proxyRes.headers[colorHeader] = req[COLOR]
      })
      // A client that gives up before the upstream has answered: http-proxy-3 would leave the upstream request
      // open, and pipe a late 101 into the closed socket, holding an upstream WebSocket nobody reads.
      socket.once('close', () => {
        if (!req[UPGRADED]) {
          req[CLIENT_GONE] = true
          proxyReq.destroy()
        }
      })
    })
  }

  /** Forwards an upgrade whose headers the caller has already rewritten (see upstreamRequestHeaders). */
  forward(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    upstream: Upstream,
    headers: Record<string, string>,
  ): void {
    const tagged = req as TaggedRequest
    tagged[COLOR] = upstream.color
    req.headers = headers
    const entry: OpenWebSocket = { color: upstream.color, upstream, socket }
    this.open.add(entry)
    upstream.outstanding++
    this.#options.onOpened?.(entry)
    socket.once('close', () => {
      this.open.delete(entry)
      upstream.outstanding--
      this.#options.onClosed?.(entry)
    })
    this.#proxy.ws(
      req,
      socket,
      head,
      {
        target: upstream.url,
        connectTimeout: this.#options.connectTimeout,
        // An https:// upstream's pool TLS options (CA, client certificate, name) ride on its agent.
        agent: upstream.websocketAgent,
        secure: upstream.tls?.rejectUnauthorized ?? true,
      },
      (error: Error) => {
        // Destroying the upstream request for a client that left is not the upstream's failure.
        if (tagged[CLIENT_GONE]) return
        const failure = classifyUpstreamError(error)
        this.#options.onUpstreamFailure(upstream, failure.reason, error)
        this.#options.logger.warn(
          { err: error, color: upstream.color, upstream: upstream.url, reason: failure.reason },
          'websocket upstream failed',
        )
        // Before the upgrade nothing has been written to the client yet, so it can still get a proper answer.
        if (socket.writable && !tagged[UPGRADED]) {
          socket.end(
            rawErrorResponse(failure.code, `websocket upstream ${upstream.color} failed (${failure.reason})`),
          )
        }
      },
    )
  }

  /** Closes every open WebSocket (shutdown, after the grace period), or those of one color (a drain's timeout). */
  closeAll(color?: Color): void {
    for (const websocket of this.open) {
      if (color === undefined || websocket.color === color) websocket.socket.destroy()
    }
  }

  close(): void {
    this.#proxy.close()
  }
}
