import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { ListenAddress } from '../config/types.ts'
import { BlueGreenError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { Metrics } from '../metrics/registry.ts'
import type { RoutingSnapshot } from '../routing/snapshot.ts'
import {
  activeFor,
  allTo,
  type Color,
  isColor,
  type State,
  type Weights,
  weightsProblem,
} from '../state/state.ts'
import type { ReplicaRegistry, StateStore, WaitResult } from '../state/store.ts'
import { TokenCheck } from './auth.ts'
import {
  onlyFields,
  optionalBoolean,
  optionalGeneration,
  optionalString,
  readJsonObject,
  sendJson,
} from './http.ts'

export interface Readiness {
  ready: boolean
  reasons: string[]
}

export interface AdminOptions {
  listen: ListenAddress
  token: string | null
  logger: Logger
  store: StateStore
  replicas: ReplicaRegistry
  metrics: Metrics
  /** How long a change with `wait: true` waits for every live replica. */
  waitTimeout: number
  replicaId: string
  snapshot: () => RoutingSnapshot | undefined
  readiness: () => Readiness
}

type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void> | void

/** The admin listener: state, switching and probes. Loopback by default; mutating calls need the token. */
export class AdminServer {
  readonly server: Server
  private readonly options: AdminOptions
  private readonly token: TokenCheck
  private readonly routes: Record<string, Partial<Record<'GET' | 'POST', Handler>>>

  constructor(options: AdminOptions) {
    this.options = options
    this.token = new TokenCheck(options.token)
    this.routes = {
      '/state': { GET: this.getState },
      '/switch': { POST: this.postSwitch },
      '/weights': { POST: this.postWeights },
      '/replicas': { GET: this.getReplicas },
      '/metrics': { GET: this.getMetrics },
      '/healthz': { GET: (_req, res) => sendJson(res, 200, { status: 'ok' }) },
      '/readyz': { GET: this.getReady },
    }
    this.server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
      this.handle(req, res).catch((error: unknown) => this.fail(res, error))
    })
  }

  listen(): Promise<AddressInfo> {
    const { host, port } = this.options.listen
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, host, () => {
        this.server.off('error', reject)
        resolve(this.server.address() as AddressInfo)
      })
    })
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://admin').pathname
    const route = this.routes[path]
    if (!route) throw new BlueGreenError('BG_NOT_FOUND', `no admin endpoint ${path}`, 404)
    const handler = route[req.method as 'GET' | 'POST']
    if (!handler) {
      res.setHeader('allow', Object.keys(route).join(', '))
      throw new BlueGreenError(
        'BG_METHOD_NOT_ALLOWED',
        `${path} takes ${Object.keys(route).join(' or ')}`,
        405,
      )
    }
    if (req.method !== 'GET' && !this.token.allows(req)) {
      throw new BlueGreenError(
        'BG_UNAUTHORIZED',
        'a valid "Authorization: Bearer <token>" header is required',
        401,
      )
    }
    await handler(req, res)
  }

  private fail(res: ServerResponse, error: unknown): void {
    if (res.headersSent) {
      res.destroy()
      return
    }
    if (error instanceof BlueGreenError) {
      sendJson(res, error.status, error.toJSON())
      return
    }
    this.options.logger.error({ err: error }, 'admin request failed')
    sendJson(res, 500, {
      error: { code: 'BG_STATE_UNAVAILABLE', message: 'internal error; see the proxy log' },
    })
  }

  private readonly getState: Handler = (_req, res) => {
    const state = this.options.snapshot()?.state
    if (!state)
      throw new BlueGreenError('BG_STATE_UNAVAILABLE', 'the routing state has not been loaded yet', 503)
    sendJson(res, 200, this.describe(state))
  }

  private readonly getReady: Handler = (_req, res) => {
    const readiness = this.options.readiness()
    sendJson(res, readiness.ready ? 200 : 503, { ready: readiness.ready, reasons: readiness.reasons })
  }

  private readonly postSwitch: Handler = async (req, res) => {
    const body = await readJsonObject(req)
    onlyFields(body, ['to', 'expectedGeneration', 'force', 'wait', 'reason'])
    if (!isColor(body.to)) {
      throw new BlueGreenError(
        'BG_UNKNOWN_COLOR',
        `"to" must be "blue" or "green", got ${JSON.stringify(body.to)}`,
        400,
      )
    }
    const to: Color = body.to
    const expected = optionalGeneration(body)
    const force = optionalBoolean(body, 'force') ?? false
    const wait = optionalBoolean(body, 'wait') ?? false
    const reason = optionalString(body, 'reason') ?? `switch to ${to}`
    this.requireHealthy(allTo(to), force)
    const state = await this.change(req, { active: to, weights: allTo(to), reason }, expected)
    await this.answerChange(res, state, wait)
  }

  private readonly postWeights: Handler = async (req, res) => {
    const body = await readJsonObject(req)
    onlyFields(body, ['blue', 'green', 'expectedGeneration', 'force', 'wait', 'reason'])
    const weights = { blue: body.blue, green: body.green }
    const problem = weightsProblem(weights)
    if (problem) throw new BlueGreenError('BG_INVALID_WEIGHTS', problem, 400)
    const valid = weights as Weights
    const expected = optionalGeneration(body)
    const force = optionalBoolean(body, 'force') ?? false
    const wait = optionalBoolean(body, 'wait') ?? false
    const reason = optionalString(body, 'reason') ?? `weights blue ${valid.blue} / green ${valid.green}`
    this.requireHealthy(valid, force)
    const current = this.options.snapshot()?.state.active ?? 'blue'
    const state = await this.change(
      req,
      { active: activeFor(valid, current), weights: valid, reason },
      expected,
    )
    await this.answerChange(res, state, wait)
  }

  private readonly getReplicas: Handler = async (_req, res) => {
    let replicas: Awaited<ReturnType<ReplicaRegistry['list']>>
    try {
      replicas = await this.options.replicas.list()
    } catch (error) {
      throw new BlueGreenError(
        'BG_STATE_UNAVAILABLE',
        `cannot list the replicas: ${(error as Error).message}`,
        503,
      )
    }
    const generation = this.options.snapshot()?.state.generation ?? null
    sendJson(res, 200, { generation, replicas })
  }

  private readonly getMetrics: Handler = async (_req, res) => {
    const { registry } = this.options.metrics
    const body = await registry.metrics()
    res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(body) })
    res.end(body)
  }

  /**
   * A change's answer. With `wait`, only once every live replica has applied it, or at admin.waitTimeout with
   * the replicas that have not (the change itself stands either way: it is committed).
   */
  private async answerChange(res: ServerResponse, state: State, wait: boolean): Promise<void> {
    if (!wait) {
      sendJson(res, 200, this.describe(state))
      return
    }
    let result: WaitResult
    try {
      result = await this.options.replicas.waitFor(state.generation, this.options.waitTimeout)
    } catch (error) {
      throw new BlueGreenError(
        'BG_STATE_UNAVAILABLE',
        `the change was made (generation ${state.generation}) but the replicas could not be checked: ${(error as Error).message}`,
        503,
      )
    }
    sendJson(res, 200, {
      ...(this.describe(state) as object),
      wait: { complete: result.complete, pending: result.pending, replicas: result.replicas.length },
    })
  }

  /** Refuses (412) to send traffic to a pool with nothing to serve it, unless forced. */
  private requireHealthy(weights: Weights, force: boolean): void {
    if (force) return
    const snapshot = this.options.snapshot()
    if (!snapshot) return
    for (const color of ['blue', 'green'] as const) {
      if (weights[color] > 0 && snapshot.pools[color].upstreams.length === 0) {
        throw new BlueGreenError(
          'BG_TARGET_UNHEALTHY',
          `the ${color} pool has no healthy upstream; pass "force": true to send it traffic anyway`,
          412,
        )
      }
    }
  }

  private async change(
    req: IncomingMessage,
    change: { active: Color; weights: Weights; reason: string },
    expectedGeneration: number | undefined,
  ): Promise<State> {
    const updatedBy = `admin@${req.socket.remoteAddress ?? 'unknown'}`
    const { logger, store } = this.options
    try {
      const state = await store.change({ ...change, updatedBy }, expectedGeneration)
      logger.info(
        {
          active: state.active,
          weights: state.weights,
          generation: state.generation,
          by: updatedBy,
          reason: change.reason,
        },
        'state changed',
      )
      return state
    } catch (error) {
      logger.warn({ err: error, by: updatedBy, change }, 'state change refused')
      throw error
    }
  }

  private describe(state: State): unknown {
    const applied = this.options.snapshot()?.state.generation ?? null
    const status = this.options.store.status?.()
    const store = status
      ? {
          reachable: status.reachable,
          lastSyncAt: status.lastSyncAt === undefined ? null : new Date(status.lastSyncAt).toISOString(),
          staleSeconds: status.lastSyncAt === undefined ? null : (Date.now() - status.lastSyncAt) / 1000,
        }
      : { reachable: true, lastSyncAt: null, staleSeconds: 0 }
    return { ...state, replica: { id: this.options.replicaId, appliedGeneration: applied, store } }
  }
}
