import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { type Http2SecureServer, Http2ServerResponse } from 'node:http2'
import type { Server as HttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { type Color, isColor } from '../colors.ts'
import type { Config } from '../config/types.ts'
import { type AnsweredCode, ListenError, statusOf } from '../errors.ts'
import type { Logger } from '../log.ts'
import {
  chooseColor,
  chooseUpstream,
  parseStickyBucket,
  type RouteInput,
  STICKY_BUCKETS,
} from '../routing/pick.ts'
import type { RoutingSnapshot } from '../routing/snapshot.ts'
import type { Upstream } from '../routing/upstream.ts'
import type { State } from '../state/state.ts'
import { CertificateStore } from './certificates.ts'
import { ColorDrainer, type DrainChange, type DrainStatus } from './drain.ts'
import {
  codingsBesidesChunked,
  conflictingHost,
  cookieValue,
  TrustedProxies,
  upgradeRequestHeaders,
  upstreamRequestHeaders,
} from './headers.ts'
import { type ForwardOptions, forward, type RequestOutcome, type Route } from './http-forward.ts'
import type { Mirror } from './mirror.ts'
import { HttpsRedirect } from './redirect.ts'
import { rawErrorResponse, refuseSocket, sendError } from './respond.ts'
import { type RetryDecision, RetryPolicy } from './retries.ts'
import { createTlsServer, type SecureConnections } from './secure-server.ts'
import type { FailureReason } from './upstream-errors.ts'
import { WebSocketForwarder } from './ws-forward.ts'

export interface ProxyListenerOptions {
  config: Config
  logger: Logger
  /** The current routing snapshot; undefined until the state has been loaded. */
  snapshot: () => RoutingSnapshot | undefined
  onOutcome?: (outcome: RequestOutcome) => void
  onUpstreamFailure?: (upstream: Upstream, reason: FailureReason, error: Error, retry: RetryDecision) => void
  /** Each step of a drain (see drain.ts), for the live events. */
  onDrainChange?: (change: DrainChange) => void
  /** Copies a share of requests to the other color while mirroring is on (mirror.ts). */
  mirror?: Mirror
}

/** How often Node checks clientHeader and clientRequest (see the listener's options). */
const CLIENT_TIMEOUT_CHECK_MS = 250

/** What a 405 to CONNECT offers instead: RFC 9110's methods but CONNECT, and PATCH (any other is forwarded too). */
const ALLOWED_METHODS = 'GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH'

/**
 * Only a WebSocket upgrade becomes one; any other offer (h2c from curl --http2 and Java's HttpClient, TLS/1.2)
 * is declined, as nginx does, and the request is served as plain HTTP/1.1 by the request handler, body and all.
 */
const isWebSocketUpgrade = (req: IncomingMessage): boolean =>
  req.headers.upgrade?.toLowerCase() === 'websocket'

class RouteError {
  readonly code: AnsweredCode
  readonly message: string
  readonly color: Color | undefined
  constructor(code: AnsweredCode, message: string, color?: Color) {
    this.code = code
    this.message = message
    this.color = color
  }
}

/**
 * The public listener: request -> route (pure, from the current snapshot) -> forward. Nothing here awaits
 * anything; a switch is a new snapshot, read by the very next request on every connection.
 */
export class ProxyListener {
  /** Plain HTTP/1.1; with `tls`, HTTP/2 and HTTP/1.1 over TLS (ALPN), or HTTPS only (tls.http2.enabled false). */
  readonly server: Server | Http2SecureServer | HttpsServer
  /** With `tls`: the certificates, re-read on renewal; update() applies a reloaded config's. */
  readonly certificates: CertificateStore | undefined
  readonly #secureConnections: SecureConnections | undefined
  readonly #redirect: HttpsRedirect | undefined
  #options: ProxyListenerOptions
  #trusted: TrustedProxies
  readonly #forwardOptions: ForwardOptions
  readonly #websockets: WebSocketForwarder
  readonly #drains: ColorDrainer
  /** The sticky cookie's Set-Cookie value for each bucket, built once per config. */
  #cookies: readonly string[]
  #inFlight = 0
  #draining = false
  #onIdle: (() => void) | undefined

  constructor(options: ProxyListenerOptions) {
    this.#options = options
    const { config, logger } = options
    const { timeouts } = config.proxy
    this.#trusted = new TrustedProxies(config.proxy.trustedProxies)
    this.#cookies = stickyCookies(config)
    this.#drains = new ColorDrainer({
      timeout: config.drain.timeout,
      logger,
      closeWebSockets: (color) => this.#websockets.closeAll(color),
      onChange: options.onDrainChange,
    })
    this.#forwardOptions = {
      colorHeader: config.proxy.colorHeader,
      retries: new RetryPolicy(config.proxy.retries),
      draining: () => this.#draining,
      onUpstreamFailure: (upstream, reason, error, retry) => {
        logger.warn(
          { color: upstream.color, upstream: upstream.url, reason, retry, err: error },
          'upstream request failed',
        )
        options.onUpstreamFailure?.(upstream, reason, error, retry)
      },
      onOutcome: options.onOutcome ?? (() => {}),
      inFlight: this.#drains,
      onResponseClose: this.#onResponseClose,
    }
    this.#websockets = new WebSocketForwarder({
      colorHeader: config.proxy.colorHeader,
      connectTimeout: timeouts.connect,
      logger,
      onUpstreamFailure: (upstream, reason, error) =>
        options.onUpstreamFailure?.(upstream, reason as FailureReason, error, 'none'),
      onOpened: (websocket) => this.#drains.websocketOpened(websocket.color),
      onClosed: (websocket) => this.#drains.websocketClosed(websocket.color),
    })
    const clientRequest = timeouts.clientRequest
    const http1 = {
      keepAliveTimeout: timeouts.clientIdle,
      // Node requires headersTimeout <= requestTimeout whenever the latter is on.
      headersTimeout:
        clientRequest > 0 ? Math.min(timeouts.clientHeader, clientRequest) : timeouts.clientHeader,
      requestTimeout: clientRequest,
      // Node enforces the two above only when this timer fires (30 s by default), so a slowloris client set
      // to 1 s would hold its socket for up to 31 s. Each tick looks only at connections with a request under
      // way, so a quarter second costs next to nothing and cuts a client at most that long after its limit.
      connectionsCheckingInterval: CLIENT_TIMEOUT_CHECK_MS,
      shouldUpgradeCallback: isWebSocketUpgrade,
      noDelay: true,
    }
    const tls = config.tls
    if (tls === null) {
      this.server = createServer(http1, this.#handleRequest)
    } else {
      this.certificates = new CertificateStore(tls, logger)
      const secure = createTlsServer({
        tls,
        certificates: this.certificates,
        http1,
        clientIdle: timeouts.clientIdle,
        logger,
        handler: this.#handleRequest,
      })
      this.server = secure.server
      this.#secureConnections = secure.connections
      if (tls.redirectFrom) this.#redirect = new HttpsRedirect(tls.redirectFrom, () => this.#port)
    }
    this.server.on('upgrade', this.#handleUpgrade)
    this.server.on('connect', this.#handleConnect)
  }

  /**
   * A reload's settings, read from the next request on: routing, retries, trusted proxies, the Host header, and
   * the client timeouts (Node reads them from the server at each check). Open connections stay open.
   */
  reconfigure(config: Config): void {
    this.#options = { ...this.#options, config }
    this.#trusted = new TrustedProxies(config.proxy.trustedProxies)
    this.#cookies = stickyCookies(config)
    this.#forwardOptions.retries = new RetryPolicy(config.proxy.retries)
    const { clientIdle, clientHeader, clientRequest } = config.proxy.timeouts
    this.#secureConnections?.setClientIdle(clientIdle)
    // An HTTP/1.1 server (plain, or HTTPS without HTTP/2) reads them here; the HTTP/2 server's HTTP/1.1 fallback
    // keeps the ones it started with (Node gives no setter), which README's reload section says.
    if ('keepAliveTimeout' in this.server) {
      this.server.keepAliveTimeout = clientIdle
      this.server.requestTimeout = clientRequest
      this.server.headersTimeout = clientRequest > 0 ? Math.min(clientHeader, clientRequest) : clientHeader
    }
  }

  get #port(): number {
    return (this.server.address() as AddressInfo | null)?.port ?? this.#options.config.listen.port
  }

  async listen(): Promise<AddressInfo> {
    const { host, port } = this.#options.config.listen
    const address = await new Promise<AddressInfo>((resolve, reject) => {
      const failed = (error: NodeJS.ErrnoException) => reject(new ListenError('proxy', host, port, error))
      this.server.once('error', failed)
      this.server.listen(port, host, () => {
        this.server.off('error', failed)
        resolve(this.server.address() as AddressInfo)
      })
    })
    if (this.#redirect) {
      try {
        await this.#redirect.listen()
      } catch (error) {
        this.server.close()
        throw error
      }
    }
    this.certificates?.watch()
    return address
  }

  /** Requests and WebSockets being served right now. */
  get active(): { requests: number; websockets: number } {
    return { requests: this.#inFlight, websockets: this.#websockets.open.size }
  }

  /** Called with every applied state: a color that lost all its traffic starts draining (see drain.ts). */
  stateApplied(previous: State | undefined, next: State): void {
    this.#drains.stateApplied(previous, next)
  }

  /** Requests and WebSockets open per color, and the drain of the color that last lost its traffic. */
  drainStatus(): DrainStatus {
    return this.#drains.status()
  }

  /**
   * Graceful shutdown: stop accepting, close idle keep-alive connections, let in-flight requests finish (their
   * responses say `connection: close`) for up to graceMs, then close whatever is left, WebSockets included.
   */
  async drain(graceMs: number): Promise<void> {
    this.#draining = true
    this.#drains.close()
    this.certificates?.unwatch()
    const redirectClosed = this.#redirect?.close()
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    // An HTTP/2 server with allowHTTP1 has it too (for its HTTP/1.1 connections), untyped.
    ;(this.server as { closeIdleConnections?: () => void }).closeIdleConnections?.()
    this.#secureConnections?.goAway()
    if (this.#inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs)
        this.#onIdle = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    if (this.#inFlight > 0)
      this.#options.logger.warn({ requests: this.#inFlight }, 'grace period over, closing requests')
    this.#websockets.closeAll()
    if ('closeAllConnections' in this.server) this.server.closeAllConnections()
    this.#secureConnections?.destroy()
    await closed
    await redirectClosed
    this.#websockets.close()
  }

  readonly #handleRequest = (req: IncomingMessage, res: ServerResponse): void => {
    this.#inFlight++
    if (this.#refusedCoding(req, res) || this.#refusedHost(req, res)) return
    const route = this.#route(req)
    if (route instanceof RouteError) {
      res.once('close', this.#onResponseClose)
      // Timed from here: routing before it is pure and takes microseconds, and the hot path reads no clock for it.
      const startedAt = performance.now()
      const { colorHeader } = this.#options.config.proxy
      sendError(res, route.code, route.message, {
        colorHeader,
        color: route.color,
        close: this.#draining,
      })
      // An answer given on a color's behalf (no healthy upstream in it) counts for that color like an upstream's:
      // in its metrics and in the rollback window, which must see a color whose every request gets 503.
      if (route.color !== undefined) {
        this.#options.onOutcome?.({
          color: route.color,
          upstream: '',
          method: req.method ?? 'GET',
          path: req.url ?? '/',
          status: statusOf(route.code),
          durationMs: performance.now() - startedAt,
        })
      }
      return
    }
    const headers = upstreamRequestHeaders(req.rawHeaders, this.#forwarding(req))
    const mirror = this.#options.mirror
    // Mirroring off costs this one test.
    const copy = mirror !== undefined && mirror.share > 0 ? mirror.select(req, route, headers) : undefined
    forward(req, res, route, headers, this.#forwardOptions, copy)
  }

  /** A request body in a transfer coding besides chunked is answered 501 (see codingsBesidesChunked). */
  #refusedCoding(req: IncomingMessage, res: ServerResponse): boolean {
    const codings = codingsBesidesChunked(req.headers['transfer-encoding'])
    if (codings === undefined) return false
    res.once('close', this.#onResponseClose)
    // Closed after the answer: a Transfer-Encoding other than plain chunked is the stuff of request smuggling (a
    // load balancer in front may have framed this body otherwise), so nothing after it is trusted as a request.
    sendError(
      res,
      'BG_UNSUPPORTED_TRANSFER_CODING',
      `the request body's transfer coding "${codings}" is not supported, only chunked is (send it as Content-Encoding)`,
      { close: true },
    )
    return true
  }

  /** An HTTP/2 request whose Host names another authority than its :authority is answered 400 (conflictingHost). */
  #refusedHost(req: IncomingMessage, res: ServerResponse): boolean {
    if (req.httpVersionMajor !== 2) return false
    const host = conflictingHost(req.rawHeaders)
    if (host === undefined) return false
    res.once('close', this.#onResponseClose)
    sendError(
      res,
      'BG_BAD_REQUEST',
      `the Host header (${JSON.stringify(host.slice(0, 100))}) names another authority than :authority (RFC 9113 8.3.1)`,
    )
    return true
  }

  /** This is no forward proxy: a CONNECT gets a status line that says so, where Node would just drop the socket. */
  readonly #handleConnect = (_req: IncomingMessage, socket: Duplex | Http2ServerResponse): void => {
    // An HTTP/2 CONNECT is a stream of its own, answered like any request.
    if (socket instanceof Http2ServerResponse) {
      socket.setHeader('allow', ALLOWED_METHODS)
      sendError(
        socket as unknown as ServerResponse,
        'BG_METHOD_NOT_ALLOWED',
        'CONNECT is not supported: this is a reverse proxy',
      )
      return
    }
    socket.on('error', (error) => this.#options.logger.debug({ err: error }, 'CONNECT client socket error'))
    refuseSocket(
      socket,
      rawErrorResponse('BG_METHOD_NOT_ALLOWED', 'CONNECT is not supported: this is a reverse proxy', [
        `allow: ${ALLOWED_METHODS}`,
      ]),
    )
  }

  readonly #onResponseClose = (): void => {
    this.#inFlight--
    if (this.#inFlight === 0) this.#onIdle?.()
  }

  readonly #handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', (error) => this.#options.logger.debug({ err: error }, 'websocket client socket error'))
    if (this.#draining) {
      socket.end(rawErrorResponse('BG_SHUTTING_DOWN', 'the proxy is shutting down'))
      return
    }
    // Reached only on a Node without shouldUpgradeCallback (before 22.21 and 24.9), where every upgrade offer
    // comes here and cannot be turned back into a request.
    if (!isWebSocketUpgrade(req)) {
      socket.end(rawErrorResponse('BG_BAD_REQUEST', 'only WebSocket upgrades are supported'))
      return
    }
    const route = this.#route(req)
    if (route instanceof RouteError) {
      socket.end(rawErrorResponse(route.code, route.message))
      return
    }
    // The Upgrade value was checked above: websocket, in the client's spelling.
    const headers = upgradeRequestHeaders(req.rawHeaders, this.#forwarding(req), req.headers.upgrade!)
    this.#websockets.forward(req, socket, head, route.upstream, headers)
  }

  #route(req: IncomingMessage): Route | RouteError {
    const snapshot = this.#options.snapshot()
    if (!snapshot) return new RouteError('BG_STATE_UNAVAILABLE', 'the routing state has not been loaded yet')
    const { routing } = this.#options.config
    const input: RouteInput = { random: Math.random() }
    if (routing.previewHeader !== null) {
      const preview = req.headers[routing.previewHeader]
      if (preview !== undefined) {
        if (!isColor(preview)) {
          return new RouteError('BG_BAD_PREVIEW', `${routing.previewHeader} must be "blue" or "green"`)
        }
        input.preview = preview
      }
    }
    if (routing.sticky.mode === 'cookie') {
      const value = cookieValue(req.headers.cookie, routing.sticky.cookie)
      const bucket = parseStickyBucket(value)
      if (bucket !== undefined) input.cookieBucket = bucket
      else if (isColor(value)) input.cookieColor = value
    } else if (routing.sticky.mode === 'header') {
      const key = req.headers[routing.sticky.header]
      // An empty value is no key: hashed, it would put every such client in one bucket and move them all at once.
      if (typeof key === 'string' && key !== '') input.stickyKey = key
    }
    const choice = chooseColor(snapshot, routing.sticky, input)
    const upstream = chooseUpstream(snapshot.pools[choice.color])
    if (!upstream) {
      return new RouteError(
        'BG_NO_HEALTHY_UPSTREAM',
        `no healthy upstream in the ${choice.color} pool`,
        choice.color,
      )
    }
    return {
      upstream,
      snapshot,
      color: choice.color,
      setCookie: choice.cookieBucket === undefined ? undefined : this.#cookies[choice.cookieBucket],
    }
  }

  #forwarding(req: IncomingMessage) {
    const peer = req.socket.remoteAddress ?? ''
    return {
      peer,
      trusted: this.#trusted.has(peer),
      proto: this.certificates ? 'https' : 'http',
      preserveHost: this.#options.config.proxy.preserveHost,
    }
  }
}

function stickyCookies(config: Config): readonly string[] {
  const maxAge = Math.floor(config.routing.sticky.cookieMaxAge / 1000)
  return Array.from(
    { length: STICKY_BUCKETS },
    (_, bucket) =>
      `${config.routing.sticky.cookie}=${bucket}; Path=/; Max-Age=${maxAge}; HttpOnly; SameSite=Lax`,
  )
}
