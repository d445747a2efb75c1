import { readFileSync } from 'node:fs'
import { Agent as HttpsAgent } from 'node:https'
import { isIP } from 'node:net'
import { type ConnectionOptions, checkServerIdentity, type PeerCertificate } from 'node:tls'
import { Pool } from 'undici'
import type { Color } from '../colors.ts'
import { sameValue } from '../config/changes.ts'
import type { PoolConfig, TimeoutsConfig, UpstreamConfig, UpstreamTlsConfig } from '../config/types.ts'

/**
 * One upstream server and its keep-alive connections (an undici Pool: its `dispatcher`). Created once at start-up
 * and shared by every routing snapshot; only `outstanding` changes, counted by the forwarder for
 * least-outstanding balancing and draining.
 */
export class Upstream {
  readonly color: Color
  readonly url: string
  readonly origin: string
  /** Where requests to it are dispatched: undici's pool of keep-alive connections to it. */
  readonly dispatcher: Pool
  /**
   * The name every request to an https:// upstream sends (SNI) and checks its certificate against. Passed with each
   * request: undici would otherwise take it from the request's Host, which is the client's with preserveHost.
   */
  readonly servername: string | undefined
  /** The TLS options of its pool (upstreamTlsOptions), for WebSockets' connections; undefined for http://. */
  readonly tls: ConnectionOptions | undefined
  /** Requests and WebSockets in flight to this upstream. */
  outstanding = 0
  readonly #options: Pool.Options
  #fresh: Pool | undefined
  #websocketAgent: HttpsAgent | undefined

  constructor(color: Color, config: UpstreamConfig, pool: PoolConfig, timeouts: TimeoutsConfig) {
    this.color = color
    this.url = config.url
    this.origin = config.origin
    this.tls = tlsOptionsOf(config, pool)
    this.servername = this.tls?.servername
    this.#options = upstreamOptions(pool, timeouts, this.tls)
    this.dispatcher = new Pool(config.origin, this.#options)
  }

  /** Whether its connections were made with these settings: a reload keeps it only then. */
  sameOptions(options: Pool.Options): boolean {
    return sameValue(this.#options, options)
  }

  /**
   * Connections that serve one request each (pipelining 0 turns keep-alive off), for requests sent again: the idle
   * connection a request failed on may have been closed by the upstream, and so may every other idle one, since an
   * upstream that closes idle connections or dies closes them all. Made at the first retry.
   */
  get freshDispatcher(): Pool {
    // Closed (a reload removed it and it has drained): no new pool that nothing would close.
    if (this.dispatcher.closed) return this.dispatcher
    this.#fresh ??= new Pool(this.origin, { ...this.#options, pipelining: 0 })
    return this.#fresh
  }

  /** An agent that opens WebSockets' TLS connections with the pool's options (http-proxy-3 takes one). */
  get websocketAgent(): HttpsAgent | undefined {
    if (this.tls === undefined) return undefined
    this.#websocketAgent ??= new HttpsAgent({ ...this.tls, keepAlive: false })
    return this.#websocketAgent
  }

  async close(): Promise<void> {
    this.#websocketAgent?.destroy()
    await Promise.all([this.dispatcher.close(), this.#fresh?.close()])
  }

  async destroy(): Promise<void> {
    this.#websocketAgent?.destroy()
    await Promise.all([this.dispatcher.destroy(), this.#fresh?.destroy()])
  }
}

/** The connection settings of a pool's upstreams; `tls` from upstreamTlsOptions for an https:// one. */
export function upstreamOptions(
  pool: PoolConfig,
  timeouts: TimeoutsConfig,
  tls: ConnectionOptions | undefined,
): Pool.Options {
  // undici's defaults suit a client, not an edge proxy: 300 s header and body timeouts, unbounded connections.
  return {
    connections: pool.maxConnectionsPerUpstream,
    pipelining: 1,
    headersTimeout: timeouts.header,
    bodyTimeout: timeouts.body,
    keepAliveTimeout: timeouts.upstreamIdle,
    keepAliveMaxTimeout: timeouts.upstreamIdle,
    connect: { timeout: timeouts.connect, noDelay: true, ...tls },
  }
}

/**
 * The TLS options for connections to a pool's https:// upstream, from its `tls` config (files read now): one
 * function, so a config reload can build them again the same way. The name sent and checked defaults to the
 * upstream URL's host when it is a DNS name; for an IP address, set servername (else the request's Host is used).
 */
/** An upstream's TLS options: its pool's, for an https:// upstream; undefined for http://. */
export function tlsOptionsOf(config: UpstreamConfig, pool: PoolConfig): ConnectionOptions | undefined {
  return config.origin.startsWith('https:') ? upstreamTlsOptions(pool.tls, config.origin) : undefined
}

export function upstreamTlsOptions(config: UpstreamTlsConfig | null, origin: string): ConnectionOptions {
  const host = new URL(origin).hostname.replace(/^\[|\]$/g, '')
  const address = isIP(host) !== 0
  const servername = config?.servername ?? (address ? undefined : host)
  const options: ConnectionOptions = { rejectUnauthorized: config?.rejectUnauthorized ?? true }
  if (servername !== undefined) options.servername = servername
  // An upstream named by its IP address, with no servername: undici sends the request's Host as the SNI name (the
  // client's, with preserveHost), and Node would check the certificate against that name. Checked against the
  // address instead, as nginx checks against the upstream's own name, whatever the client asked for.
  else if (address) options.checkServerIdentity = identityCheckFor(host)
  if (config?.ca !== undefined) options.ca = readFileSync(config.ca)
  if (config?.cert !== undefined && config.key !== undefined) {
    options.cert = readFileSync(config.cert)
    options.key = readFileSync(config.key)
  }
  return options
}

const identityChecks = new Map<string, (name: string, cert: PeerCertificate) => Error | undefined>()

/** One function per address, so that two option sets for the same upstream compare equal (a reload keeps it). */
function identityCheckFor(address: string): (name: string, cert: PeerCertificate) => Error | undefined {
  let check = identityChecks.get(address)
  if (!check) {
    check = (_name, cert) => checkServerIdentity(address, cert)
    identityChecks.set(address, check)
  }
  return check
}

export function createUpstreams(
  pools: Readonly<Record<Color, PoolConfig>>,
  timeouts: TimeoutsConfig,
): Record<Color, Upstream[]> {
  return {
    blue: pools.blue.upstreams.map((upstream) => new Upstream('blue', upstream, pools.blue, timeouts)),
    green: pools.green.upstreams.map((upstream) => new Upstream('green', upstream, pools.green, timeouts)),
  }
}
