import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { type AuditTrail, type ChangeAction, recordAttempt, refusal } from '../audit/audit.ts'
import type { Color } from '../colors.ts'
import type { ReloadOutcome } from '../config/changes.ts'
import type { AdminConfig, PoolConfig } from '../config/types.ts'
import { BlueGreenError, ListenError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { Metrics } from '../metrics/registry.ts'
import type { Mirror } from '../proxy/mirror.ts'
import type { SmokeOptions } from '../proxy/smoke.ts'
import type { Readiness } from '../routing/table.ts'
import type { ReplicaRegistry } from '../state/store.ts'
import { buildInfo } from '../version.ts'
import { AdminGuard } from './access.ts'
import { Changes } from './changes.ts'
import { consoleRoutes } from './console.ts'
import { describeChange, describeState, type StateSources } from './describe-state.ts'
import { ReplicaForgetting } from './forget-replica.ts'
import { readJsonObject, sendJson } from './http.ts'
import { ADMIN_MARK } from './mark.ts'
import { MirrorGate } from './mirror-gate.ts'
import { mirrorReads } from './mirror-reads.ts'
import type { SmokeGate } from './smoke-gate.ts'

export interface AdminOptions extends StateSources {
  config: AdminConfig
  pools: Readonly<Record<Color, PoolConfig>>
  logger: Logger
  replicas: ReplicaRegistry
  audit: AuditTrail
  metrics: Metrics
  /** The smoke checks, run before a change and by POST /smoke. */
  smoke: SmokeOptions
  /** The app's smoke gate over them, shared with the release guard; one is built from `smoke` when absent. */
  smokeGate?: SmokeGate
  readiness: () => Readiness
  /** With --workers: every worker's metrics added up, answered instead of this process's own. */
  clusterMetrics?: () => Promise<string>
  /** POST /reload: re-reads the config file and applies it whole or not at all (it records the attempt itself). */
  reload?: (trigger: { actor: string; address: string }) => Promise<ReloadOutcome>
  /** The mirror: GET /mirror, GET /mirror/diffs, POST /mirror's default share, and its gate before changes. */
  mirror?: Mirror
  /** Per color, the charts' figures pooled across replicas, and the rollback thresholds, for GET /windows. */
  windows?: () => Promise<unknown>
}

/** `tokenName` is the name of the token a mutating call came with, when tokens are configured. */
type Handler = (
  req: IncomingMessage,
  res: ServerResponse,
  tokenName: string | undefined,
) => Promise<void> | void

interface Route {
  GET?: Handler
  POST?: Handler
  DELETE?: Handler
}

const MAX_EVENTS = 1000
/** Read-only endpoints for load balancers, orchestrators and Prometheus: answered whatever the Host header. */
const OPEN_TO_ANY_HOST = new Set(['/healthz', '/readyz', '/metrics'])

/**
 * Reads that hold data from users' traffic (GET /mirror/diffs: paths, headers and the bodies' beginnings): with
 * tokens configured, they need one, as a change does. The other reads say how the proxy is doing, not what its
 * users sent.
 */
const TOKEN_READS = new Set(['/mirror/diffs'])

/** DELETE /replicas/ID: the one route with a parameter. */
const REPLICA_PREFIX = '/replicas/'
const REPLICA_ROUTE = '/replicas/:id'

/** The change endpoints and the action each records in the audit trail. */
const ACTIONS: Record<string, ChangeAction> = {
  '/switch': 'switch',
  '/weights': 'weights',
  '/rollback': 'rollback',
  '/rollout': 'rollout',
  '/rollout/abort': 'rollout-abort',
  '/rollout/pause': 'rollout-pause',
  '/rollout/resume': 'rollout-resume',
  '/rollout/promote': 'rollout-promote',
  '/mirror': 'mirror',
}

/**
 * The admin listener (loopback by default): the state, the replicas, changes, the audit trail, metrics, probes.
 * Reads are GETs; changes are POSTs only, through the guard (Host, Origin, token) and one change path.
 */
export class AdminServer {
  readonly server: Server
  #options: AdminOptions
  #guard: AdminGuard
  #changes: Changes
  readonly #forgetting: ReplicaForgetting
  readonly #routes: Record<string, Route>
  readonly #mirrorGate: MirrorGate | undefined

  constructor(options: AdminOptions) {
    this.#options = options
    this.#guard = new AdminGuard({ ...options.config, logger: options.logger })
    this.#mirrorGate = options.mirror && new MirrorGate({ mirror: options.mirror })
    this.#changes = new Changes({
      ...options,
      waitTimeout: options.config.waitTimeout,
      mirrorGate: this.#mirrorGate,
      publish: options.events ? (kind, data) => options.events!.publish(kind, data) : undefined,
    })
    this.#forgetting = new ReplicaForgetting(options)
    const mirror = mirrorReads(options.mirror)
    this.#routes = {
      '/state': { GET: this.#getState },
      '/replicas': { GET: this.#getReplicas },
      [REPLICA_ROUTE]: { DELETE: this.#forgetReplica },
      '/events': { GET: this.#getEvents },
      ...(options.events ? { '/events/stream': { GET: options.events.serve.bind(options.events) } } : {}),
      '/metrics': { GET: this.#getMetrics },
      '/healthz': { GET: (_req, res) => sendJson(res, 200, { status: 'ok' }) },
      '/readyz': { GET: this.#getReady },
      '/version': { GET: (_req, res) => sendJson(res, 200, buildInfo()) },
      '/windows': { GET: this.#getWindows },
      ...consoleRoutes(),
      '/switch': { POST: this.#change('switch') },
      '/weights': { POST: this.#change('weights') },
      '/rollback': { POST: this.#change('rollback') },
      '/rollout': { POST: this.#change('rollout') },
      '/rollout/abort': { POST: this.#change('rollout-abort') },
      '/smoke': { POST: this.#smoke },
      '/rollout/pause': { POST: this.#change('rollout-pause') },
      '/rollout/resume': { POST: this.#change('rollout-resume') },
      '/rollout/promote': { POST: this.#change('rollout-promote') },
      ...(options.reload ? { '/reload': { POST: this.#reload } } : {}),
      '/mirror': { GET: mirror.status, POST: this.#change('mirror') },
      '/mirror/diffs': { GET: mirror.diffs },
    }
    this.server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
      // The CLI checks for it before a change, so a mistyped --admin (the proxy port) never reaches an application.
      res.setHeader(ADMIN_MARK, '1')
      this.#handle(req, res).catch((error: unknown) => this.#fail(res, error))
    })
  }

  /**
   * A reload's admin settings (tokens, allowed hosts and origins, the wait), pools and smoke checks, for the next
   * call on: a rotated token is refused from then on and its successor accepted. Calls under way finish as begun.
   */
  reconfigure(settings: Pick<AdminOptions, 'config' | 'pools' | 'smoke'>): void {
    this.#options = { ...this.#options, ...settings }
    const options = this.#options
    this.#guard = new AdminGuard({ ...options.config, logger: options.logger })
    this.#changes = new Changes({ ...options, waitTimeout: options.config.waitTimeout })
  }

  listen(): Promise<AddressInfo> {
    const { host, port } = this.#options.config.listen
    return new Promise((resolve, reject) => {
      const failed = (error: NodeJS.ErrnoException) => reject(new ListenError('admin', host, port, error))
      this.server.once('error', failed)
      this.server.listen(port, host, () => {
        this.server.off('error', failed)
        resolve(this.server.address() as AddressInfo)
      })
    })
  }

  close(): Promise<void> {
    this.#options.events?.endStreams()
    return new Promise((resolve) => {
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Routed on the path exactly as sent: no URL resolution, so "//host/switch" or "/a/../switch" is not /switch.
    const target = req.url ?? '/'
    const query = target.indexOf('?')
    const path = query === -1 ? target : target.slice(0, query)
    const routeName = path.startsWith(REPLICA_PREFIX) ? REPLICA_ROUTE : path
    // A change refused at the door (Host, Origin, token) is an attempt all the same, and goes on the record.
    const action = req.method === 'POST' ? ACTIONS[path] : undefined
    const forgetting = req.method === 'DELETE' && routeName === REPLICA_ROUTE
    let tokenName: string | undefined
    let handler: Handler | undefined
    try {
      // Probes and scrapers name the pod's address as Host; these answers say nothing a rebinding page could use.
      if (!(req.method === 'GET' && OPEN_TO_ANY_HOST.has(path))) this.#guard.checkHost(req)
      const route = this.#routes[routeName]
      if (!route) throw new BlueGreenError('BG_NOT_FOUND', `no admin endpoint ${path}`)
      const methods = Object.keys(route)
      handler = route[req.method as keyof Route]
      if (!handler) {
        res.setHeader('allow', methods.join(', '))
        throw new BlueGreenError('BG_METHOD_NOT_ALLOWED', `${path} takes ${methods.join(' or ')}`)
      }
      // Everything but a read needs the token, and the reads of users' data.
      if (req.method !== 'GET' || TOKEN_READS.has(path)) tokenName = this.#guard.authorize(req)
    } catch (error) {
      if (error instanceof BlueGreenError) {
        if (action) this.#changes.refused(action, req, error)
        else if (forgetting) this.#forgetting.refused(replicaIdIn(path), req, error)
        else if (req.method === 'POST' && path === '/reload') this.#reloadRefused(req, error)
      }
      throw error
    }
    await handler(req, res, tokenName)
  }

  #fail(res: ServerResponse, error: unknown): void {
    if (res.headersSent) {
      res.destroy()
      return
    }
    if (error instanceof BlueGreenError) {
      const retryAfter = (error.details as { retryAfter?: number } | undefined)?.retryAfter
      if (retryAfter !== undefined) res.setHeader('retry-after', String(retryAfter))
      sendJson(res, error.status, error.toJSON())
      return
    }
    // A bug, not an outage: its own code, so an operator does not go looking for a store that is fine.
    this.#options.logger.error({ err: error }, 'admin request failed')
    const internal = new BlueGreenError('BG_INTERNAL', 'internal error; see the proxy log')
    sendJson(res, internal.status, internal.toJSON())
  }

  #change(action: ChangeAction): Handler {
    return async (req, res, tokenName) => {
      // A body that cannot be read still counts as an attempt, so it is passed on to be audited as refused.
      const body = await readJsonObject(req).catch((error: unknown) => error as Error)
      const result = await this.#changes.run(action, tokenName, req, body)
      sendJson(res, 200, await describeChange(this.#options, result))
    }
  }

  /**
   * POST /reload: 200 with what changed (or that nothing did); a file with problems 400 and every problem, a change
   * that needs a restart 422 naming the keys; the running config is untouched by either.
   */
  readonly #reload: Handler = async (req, res, tokenName) => {
    const body = await readJsonObject(req)
    if (Object.keys(body).length > 0) {
      throw new BlueGreenError('BG_BAD_REQUEST', '/reload takes no fields: it re-reads the config file')
    }
    const address = req.socket.remoteAddress ?? 'unknown'
    const actor = tokenName === undefined ? address : `token:${tokenName}`
    const outcome = await this.#options.reload!({ actor, address })
    if (outcome.code === undefined) return sendJson(res, 200, outcome)
    // The error's code and message are the outcome's; its details are the rest (the problems, the keys, the workers).
    const { code, message, ...details } = outcome
    throw new BlueGreenError(code, message, details)
  }

  /** A reload refused at the door (Host, Origin, token) is an attempt all the same, and goes on the record. */
  #reloadRefused(req: IncomingMessage, error: BlueGreenError): void {
    const address = req.socket.remoteAddress ?? 'unknown'
    recordAttempt(this.#options.audit, this.#options.logger, {
      actor: address,
      address,
      action: 'reload',
      from: this.#options.snapshot()?.state,
      to: undefined,
      reason: 'reload',
      outcome: refusal(error),
    })
  }

  /** Runs the smoke checks on a color now: 200 with every check's result, passed or not (the CLI exits 1 then). */
  readonly #smoke: Handler = async (req, res) => {
    const body = await readJsonObject(req)
    sendJson(res, 200, await this.#changes.smoke.run(smokeColor(body)))
  }

  readonly #getState: Handler = async (_req, res) => {
    const state = this.#options.snapshot()?.state
    if (!state) throw new BlueGreenError('BG_STATE_UNAVAILABLE', 'the routing state has not been loaded yet')
    sendJson(res, 200, await describeState(this.#options, state))
  }

  readonly #getReady: Handler = (_req, res) => {
    const readiness = this.#options.readiness()
    sendJson(res, readiness.ready ? 200 : 503, { ready: readiness.ready, reasons: readiness.reasons })
  }

  readonly #getReplicas: Handler = async (_req, res) => {
    let listing: Awaited<ReturnType<ReplicaRegistry['list']>>
    try {
      listing = await this.#options.replicas.list()
    } catch (error) {
      throw new BlueGreenError(
        'BG_STATE_UNAVAILABLE',
        `cannot list the replicas: ${(error as Error).message}`,
      )
    }
    sendJson(res, 200, {
      generation: this.#options.snapshot()?.state.generation ?? null,
      replicas: listing.live,
      missing: listing.missing,
      standby: (await this.#options.standbyStatus?.()) ?? null,
    })
  }

  readonly #forgetReplica: Handler = async (req, res, tokenName) => {
    const path = (req.url ?? '/').split('?')[0]!
    const id = replicaIdIn(path)
    const body = await readJsonObject(req).catch((error: unknown) => error as Error)
    const forgotten = await this.#forgetting.run(id, tokenName, req, body)
    sendJson(res, 200, { forgotten })
  }

  readonly #getEvents: Handler = async (req, res) => {
    const raw = new URL(req.url ?? '/', 'http://admin').searchParams.get('limit')
    const limit = raw === null ? 50 : Number(raw)
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_EVENTS) {
      throw new BlueGreenError('BG_BAD_REQUEST', `limit must be a whole number from 1 to ${MAX_EVENTS}`)
    }
    try {
      sendJson(res, 200, { events: await this.#options.audit.recent(limit) })
    } catch (error) {
      throw new BlueGreenError(
        'BG_STATE_UNAVAILABLE',
        `cannot read the audit trail: ${(error as Error).message}`,
      )
    }
  }

  readonly #getWindows: Handler = async (_req, res) => {
    if (!this.#options.windows) throw new BlueGreenError('BG_NOT_FOUND', 'no admin endpoint /windows')
    try {
      sendJson(res, 200, await this.#options.windows())
    } catch (error) {
      throw new BlueGreenError(
        'BG_STATE_UNAVAILABLE',
        `cannot pool the replicas' figures: ${(error as Error).message}`,
      )
    }
  }

  readonly #getMetrics: Handler = async (_req, res) => {
    const { registry } = this.#options.metrics
    const body = await (this.#options.clusterMetrics?.() ?? registry.metrics())
    res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(body) })
    res.end(body)
  }
}

/** The color POST /smoke names: {"color":"green"} and nothing else. */
function smokeColor(body: Record<string, unknown>): Color {
  const unknown = Object.keys(body).filter((key) => key !== 'color')
  if (unknown.length > 0)
    throw new BlueGreenError(
      'BG_BAD_REQUEST',
      `unknown field(s): ${unknown.join(', ')}; /smoke takes "color"`,
    )
  if (body.color !== 'blue' && body.color !== 'green') {
    throw new BlueGreenError(
      'BG_UNKNOWN_COLOR',
      `"color" must be "blue" or "green", got ${JSON.stringify(body.color ?? null)}`,
    )
  }
  return body.color
}

/** The id in /replicas/ID, decoded; as sent when it is not valid percent-encoding. */
function replicaIdIn(path: string): string {
  const encoded = path.slice(REPLICA_PREFIX.length)
  try {
    return decodeURIComponent(encoded)
  } catch {
    return encoded
  }
}
