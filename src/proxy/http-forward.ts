import type { IncomingMessage, ServerResponse } from 'node:http'
import { PassThrough } from 'node:stream'
import type { Dispatcher } from 'undici'
import type { Color } from '../colors.ts'
import { statusOf } from '../errors.ts'
import { chooseUpstream } from '../routing/pick.ts'
import type { AvailablePool, RoutingSnapshot } from '../routing/snapshot.ts'
import type { Upstream } from '../routing/upstream.ts'
import type { DrainableRequest, RequestTracker } from './drain.ts'
import { clientResponseHeaders } from './headers.ts'
import type { MirrorCopy } from './mirror-copy.ts'
import { sendError } from './respond.ts'
import { CONNECT_ATTEMPTS, type RetryDecision, type RetryPolicy } from './retries.ts'
import { classifyUpstreamError, type FailureReason, isRejectedRequest } from './upstream-errors.ts'

/** Where routing sends a request (proxy/server.ts), and all forward() needs to know of it. */
export interface Route {
  /** The snapshot the request was routed on: a retry chooses from the same upstreams. */
  snapshot: RoutingSnapshot
  color: Color
  upstream: Upstream
  /** A Set-Cookie value to add (a new sticky client during a split), or undefined. */
  setCookie: string | undefined
}

/** What the forwarder reports for every request it handled, for the access log and metrics. */
export interface RequestOutcome {
  color: Color
  upstream: string
  method: string
  path: string
  /** The status the client got; 499 (nginx's convention) when the client went away first. */
  status: number
  durationMs: number
  failure?: FailureReason
  error?: Error
}

export interface ForwardOptions {
  colorHeader: string | null
  /** Which failed requests are tried again (retries.ts). */
  retries: RetryPolicy
  /** Whether the proxy is shutting down: responses then close their connection. */
  draining: () => boolean
  /** Every failed attempt, and whether the request was then tried again. */
  onUpstreamFailure: (upstream: Upstream, reason: FailureReason, error: Error, retry: RetryDecision) => void
  /** Once per request, when it is over. */
  onOutcome: (outcome: RequestOutcome) => void
  /** Every request checks in when it starts and out when its response closes, so a drain can count and close it. */
  inFlight: RequestTracker
  /** When the client's response closes, however it ended (one 'close' listener a request serves both). */
  onResponseClose: () => void
}

const CLIENT_CLOSED = 499

class ClientClosedError extends Error {
  override name = 'ClientClosedError'
}

/**
 * Forwards one request to an upstream through undici's dispatch API and streams the response back with
 * backpressure both ways. One instance per request; it is the undici handler itself, so no closures are built.
 *
 * A failed attempt is tried again on another upstream of the same color when retries.ts says so: a request that
 * never reached an upstream, or an idempotent one without a body that failed before any of its response was relayed.
 */
class ForwardHandler implements Dispatcher.DispatchHandler, DrainableRequest {
  /** Its place in its color's in-flight list, kept by the drain (drain.ts). */
  drainSlot = -1
  readonly #req: IncomingMessage
  readonly #res: ServerResponse
  readonly #route: Route
  readonly #options: ForwardOptions
  readonly #headers: string[]
  readonly #startedAt = performance.now()
  /** The request's copy to the other color, when it is mirrored: it is fed the live answer as it streams. */
  readonly #copy: MirrorCopy | undefined
  /** The route's upstream, until a failed attempt is tried again on another. */
  #upstream: Upstream
  #controller: Dispatcher.DispatchController | undefined
  #body: PassThrough | null | undefined
  #connectFailures = 0
  #resent = 0
  /** Whether attempts go out on new connections (Upstream.freshDispatcher): once a request is sent again, they do. */
  #freshConnection = false
  #sent = false
  #finished = false
  #clientGone = false
  #status = 0

  constructor(
    req: IncomingMessage,
    res: ServerResponse,
    route: Route,
    headers: string[],
    options: ForwardOptions,
    copy: MirrorCopy | undefined,
  ) {
    this.#req = req
    this.#copy = copy
    this.#res = res
    this.#route = route
    this.#upstream = route.upstream
    this.#headers = headers
    this.#options = options
    res.on('close', this.#onClientClose)
    options.inFlight.requestStarted(route.color, this)
    options.retries.budget.requestStarted(route.color, this.#startedAt)
  }

  /** The drain of its color timed out: closing the client's connection aborts the upstream request too. */
  abort(): void {
    this.#res.destroy()
  }

  dispatch(): void {
    const req = this.#req
    // Made once: a request tried again has no body or never had it read (retries.ts), so one stream serves all.
    if (this.#body === undefined) {
      const withBody = hasBody(req)
      this.#body = withBody ? requestBody(req) : null
      this.#copy?.requestStarted(withBody)
    }
    this.#sent = false
    this.#upstream.outstanding++
    const dispatcher = this.#freshConnection ? this.#upstream.freshDispatcher : this.#upstream.dispatcher
    // undici takes servername per request (untyped); see Upstream.servername.
    const options: Dispatcher.DispatchOptions & { servername?: string | undefined } = {
      path: req.url ?? '/',
      method: req.method ?? 'GET',
      headers: this.#headers,
      body: this.#body,
      servername: this.#upstream.servername,
    }
    try {
      dispatcher.dispatch(options, this)
    } catch (error) {
      this.onResponseError(undefined, error as Error)
    }
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    this.#sent = true
    if (this.#clientGone) controller.abort(new ClientClosedError('client closed the connection'))
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    // 1xx informational responses (103 Early Hints, a stray 100) are not relayed; the final one follows.
    if (statusCode < 200) return
    const { colorHeader } = this.#options
    const out = clientResponseHeaders(headers, colorHeader)
    if (colorHeader !== null) out.push(colorHeader, this.#upstream.color)
    if (this.#route.setCookie !== undefined) out.push('set-cookie', this.#route.setCookie)
    if (this.#options.draining()) this.#res.shouldKeepAlive = false
    try {
      this.#res.writeHead(statusCode, out)
    } catch (error) {
      // Node refuses header values it would not send (control characters, a bad status): the upstream's fault.
      controller.abort(error as Error)
      return
    }
    this.#status = statusCode
    this.#copy?.liveStart(statusCode, headers)
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#copy?.liveData(chunk)
    if (!this.#res.write(chunk)) {
      controller.pause()
      this.#res.once('drain', this.#onClientDrain)
    }
  }

  onResponseEnd(): void {
    this.#copy?.liveEnd()
    this.#res.end()
    this.#finish(undefined, undefined)
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, error: Error): void {
    if (this.#finished) return
    if (this.#clientGone) {
      this.#status = CLIENT_CLOSED
      this.#finish(undefined, undefined)
      return
    }
    if (!this.#sent && isRejectedRequest(error)) {
      this.#status = statusOf('BG_BAD_REQUEST')
      // Its body, if any, was never read: close rather than parse it as the next request.
      sendError(this.#res, 'BG_BAD_REQUEST', `the request cannot be forwarded: ${error.message}`, {
        colorHeader: this.#options.colorHeader,
        color: this.#upstream.color,
        close: true,
      })
      this.#finish(undefined, error)
      return
    }
    const failure = classifyUpstreamError(error)
    const next = this.#retryTarget(failure.reason)
    this.#options.onUpstreamFailure(
      this.#upstream,
      failure.reason,
      error,
      typeof next === 'string' ? next : 'retried',
    )
    if (typeof next !== 'string') {
      this.#upstream.outstanding--
      this.#upstream = next
      this.dispatch()
      return
    }
    if (this.#res.headersSent) {
      // The status line is out: the only honest signal left is a truncated response.
      this.#res.destroy(error)
    } else {
      const message =
        failure.code === 'BG_UPSTREAM_TIMEOUT'
          ? `upstream ${this.#upstream.color} did not answer in time (${failure.reason})`
          : `upstream ${this.#upstream.color} failed (${failure.reason})`
      this.#status = statusOf(failure.code)
      sendError(this.#res, failure.code, message, {
        colorHeader: this.#options.colorHeader,
        color: this.#upstream.color,
        close: this.#options.draining(),
      })
    }
    this.#finish(failure.reason, error)
  }

  /** Where to try again after a failed attempt (see retries.ts), or why not. */
  #retryTarget(reason: FailureReason): Upstream | 'denied' | 'none' {
    // Once the status line is out, the client has its response, however it ends.
    if (this.#res.headersSent) return 'none'
    if (!this.#sent) {
      if (++this.#connectFailures >= CONNECT_ATTEMPTS) return 'none'
      return chooseUpstream(this.#available(), this.#upstream) ?? 'none'
    }
    const { retries } = this.#options
    if (this.#body !== null || this.#resent >= retries.max || !retries.mayResend(this.#req.method, reason))
      return 'none'
    if (!retries.budget.tryRetry(this.#upstream.color, performance.now())) return 'denied'
    this.#resent++
    this.#freshConnection = true
    // Another upstream when there is one; else this one again, on a new connection all the same.
    return chooseUpstream(this.#available(), this.#upstream) ?? this.#upstream
  }

  /** The upstreams the route's color could use in the snapshot it was routed on. */
  #available(): AvailablePool {
    return this.#route.snapshot.pools[this.#route.color]
  }

  #finish(failure: FailureReason | undefined, error: Error | undefined): void {
    if (this.#finished) return
    this.#finished = true
    this.#upstream.outstanding--
    this.#copy?.liveOver()
    this.#options.onOutcome({
      color: this.#upstream.color,
      upstream: this.#upstream.url,
      method: this.#req.method ?? 'GET',
      path: this.#req.url ?? '/',
      status: this.#status,
      durationMs: performance.now() - this.#startedAt,
      failure,
      error,
    })
  }

  readonly #onClientDrain = (): void => {
    this.#controller?.resume()
  }

  readonly #onClientClose = (): void => {
    this.#options.inFlight.requestEnded(this.#upstream.color, this)
    this.#options.onResponseClose()
    // writableEnded, not writableFinished: an HTTP/2 stream the client reset reads as finished, though no
    // response was ever ended, and its upstream request would go on holding a connection (rapid reset).
    if (this.#finished || this.#res.writableEnded) return
    // The client went away mid-request: stop the upstream work too.
    this.#clientGone = true
    this.#controller?.abort(new ClientClosedError('client closed the connection'))
  }
}

/**
 * Whether the request has a body to forward. An HTTP/2 request (server.ts gives its compat objects the same
 * interface) frames its body by DATA frames, with no Content-Length needed: it has one unless its HEADERS ended
 * the stream.
 */
function hasBody(req: IncomingMessage): boolean {
  const stream = (req as { stream?: { endAfterHeaders: boolean } }).stream
  if (stream !== undefined) return !stream.endAfterHeaders
  return req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0'
}

/**
 * The client's body as undici's request body. When the upstream answers before it has read the whole body, undici
 * destroys the body stream it was given; were that the IncomingMessage itself, Node would stop reading the
 * client's connection mid-body and the next request on it would never be parsed. Through a PassThrough only that
 * is destroyed, and the rest of the client's body is read and dropped (as nginx does), so the connection lives on.
 */
function requestBody(req: IncomingMessage): PassThrough {
  const body = new PassThrough()
  req.pipe(body)
  req.once('error', (error) => body.destroy(error))
  body.once('close', () => {
    if (req.complete || req.destroyed) return
    req.unpipe(body)
    req.resume()
  })
  return body
}

export function forward(
  req: IncomingMessage,
  res: ServerResponse,
  route: Route,
  headers: string[],
  options: ForwardOptions,
  copy?: MirrorCopy,
): void {
  new ForwardHandler(req, res, route, headers, options, copy).dispatch()
}
