import type { Color } from '../colors.ts'

// The validated, defaulted, frozen configuration. src/config/schema.ts builds it from the file and README's
// "Configuration" section documents every key. Durations are milliseconds here; the file may say "5s" or 5000.

export type Balance = 'round-robin' | 'least-outstanding'

export interface ListenAddress {
  host: string
  port: number
}

export interface UpstreamConfig {
  /** As written in the file, e.g. "http://10.0.0.11:8080". */
  url: string
  /** The origin undici connects to: "http://10.0.0.11:8080". */
  origin: string
}

export interface HealthCheckConfig {
  /** Active checks on (the probe before a change runs either way). */
  enabled: boolean
  /** The path probed on each upstream; an answer below 500 counts as up. */
  path: string
  timeout: number
  interval: number
  /** Consecutive passing checks that bring an unhealthy upstream back. */
  healthyThreshold: number
  /** Consecutive failing checks that take a healthy upstream out. */
  unhealthyThreshold: number
}

export interface OutlierConfig {
  /** Consecutive 5xx answers or connection failures that eject an upstream; 0 turns passive detection off. */
  consecutiveFailures: number
  /** The first ejection lasts this long; each further one doubles it, up to maxEjectionTime. */
  ejectionTime: number
  maxEjectionTime: number
  /** At most this share (percent) of a pool is ejected at once, so detection never empties a pool by itself. */
  maxEjectedPercent: number
}

/** TLS to a pool's https:// upstreams (README "TLS and HTTP/2"). Files are absolute paths, read at start-up. */
export interface UpstreamTlsConfig {
  /** PEM CA certificates to trust instead of the system's; undefined: the system's. */
  ca: string | undefined
  /** The name sent (SNI) and checked in the upstream's certificate; undefined: the upstream URL's host. */
  servername: string | undefined
  /** A client certificate and its key (PEM), for upstreams that ask for one (mTLS). */
  cert: string | undefined
  key: string | undefined
  /** Check the upstream's certificate (the default); false accepts any, for tests only. */
  rejectUnauthorized: boolean
}

export interface PoolConfig {
  upstreams: readonly UpstreamConfig[]
  /** TLS to https:// upstreams; null: Node's defaults (the system's CAs). */
  tls: UpstreamTlsConfig | null
  balance: Balance
  /** Keep-alive connections per upstream, at most. */
  maxConnectionsPerUpstream: number
  healthCheck: HealthCheckConfig
  outlier: OutlierConfig
}

export interface RedisConfig {
  /** redis://[user:password@]host:port[/db], or rediss:// for TLS. With sentinels, the master's credentials and db. */
  url: string
  /** The key holding the state; its channel and replica registry are named after it. */
  key: string
  sentinels?: readonly { host: string; port: number }[]
  /** The Sentinel master name. */
  name?: string
  sentinelPassword?: string
  /** A PEM file of CA certificates to trust for rediss:// (default: the system's). */
  tlsCaFile?: string
  /** A command that gets no reply within this fails, so a change answers 503 instead of hanging. */
  commandTimeout: number
  connectTimeout: number
  /** Re-read the key this often, in case a published change was missed. */
  pollInterval: number
  /** Each replica reports itself this often; it counts as missing after three missed reports. */
  heartbeatInterval: number
  /** A missing replica is listed (and keeps `wait` from completing) this long before it is dropped. */
  forgetMissingAfter: number
  /** Where this replica keeps the last state it applied, to serve if it starts while Redis is down; null: nowhere. */
  lastStateFile: string | null
}

export interface StateConfig {
  store: 'file' | 'redis'
  path: string
  redis?: RedisConfig
  initial: Color
  /** A replica cut off from the store for longer than this fails /readyz; 0 is off. */
  maxStaleness: number
}

export interface TimeoutsConfig {
  /** Connecting to an upstream (TCP + TLS). */
  connect: number
  /** From the request sent until the upstream's response headers are complete. */
  header: number
  /** Between two chunks of an upstream response body. */
  body: number
  /** An idle keep-alive connection to an upstream is closed after this. */
  upstreamIdle: number
  /** An idle keep-alive connection from a client is closed after this. */
  clientIdle: number
  /** A client must send its request headers within this. */
  clientHeader: number
  /** A client must send its whole request (headers and body) within this; 0 turns it off. */
  clientRequest: number
}

/** Failures after which a request that reached an upstream may be sent again (README "Retries"). */
export type RetryableFailure = 'reset' | 'header_timeout'

export interface RetryBudgetConfig {
  /** Retries of requests that reached an upstream: at most this share (percent) of a color's requests over 10 s... */
  percent: number
  /** ...plus this many a second, so a quiet color can still retry. */
  minPerSecond: number
}

export interface RetriesConfig {
  /** Times a request that reached an upstream is sent again (idempotent, no body, nothing relayed yet); 0 = never. */
  max: number
  /** Methods sent again: upper case, never POST, PATCH or CONNECT. */
  methods: readonly string[]
  /** The failures after which they are. */
  on: readonly RetryableFailure[]
  budget: RetryBudgetConfig
}

export interface ProxyConfig {
  timeouts: TimeoutsConfig
  retries: RetriesConfig
  /** Pass the client's Host header to the upstream (true) or send the upstream's own host (false). */
  preserveHost: boolean
  /** Peers (IPs or CIDRs) whose X-Forwarded-* headers are kept and extended instead of replaced. */
  trustedProxies: readonly string[]
  /** Response header naming the color that served the request; null turns it off. */
  colorHeader: string | null
}

export interface StickyConfig {
  /** cookie: the proxy gives each client a bucket in a cookie; header: a hash of a request header; none: per request. */
  mode: 'cookie' | 'header' | 'none'
  cookie: string
  header: string
  /** Cookie lifetime in milliseconds. */
  cookieMaxAge: number
}

export interface RoutingConfig {
  sticky: StickyConfig
  /** Request header that sends a request to a named color (for smoke tests of the idle color); null is off. */
  previewHeader: string | null
}

export interface AdminToken {
  /** Who the token stands for, as the audit trail names it: "admin" for admin.token, else its key in admin.tokens. */
  name: string
  token: string
}

export interface AdminConfig {
  listen: ListenAddress
  /** admin.token (named "admin") and admin.tokens; empty means no token is asked for. */
  tokens: readonly AdminToken[]
  /** Host header values (without port) the admin API answers to, against DNS rebinding; null: any. */
  allowedHosts: readonly string[] | null
  /** Origins allowed to make mutating calls from a browser; calls carrying any other Origin are refused. */
  allowedOrigins: readonly string[]
  /** How many audit events the store keeps. */
  auditKeep: number
  /** How long `POST /switch` with `wait: true` waits for every live replica to apply the change. */
  waitTimeout: number
}

export interface LogConfig {
  level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
  /** auto: readable lines on a terminal, JSON otherwise. */
  format: 'auto' | 'json' | 'pretty'
  access: boolean
}

export interface ShutdownConfig {
  /** After readiness fails, wait this long before closing the listener, so load balancers notice. */
  delay: number
  /** In-flight requests get this long to finish before their connections are closed. */
  grace: number
}

export interface RollbackConfig {
  /** Automatic rollback on (the default). */
  enabled: boolean
  /** The sliding window the figures are taken over. */
  window: number
  /** How long after a change sends traffic to a color that color is watched. */
  watch: number
  /** How often the watched color is evaluated. */
  evaluateEvery: number
  /** Fewer requests than this in the window decide nothing. */
  minRequests: number
  /** (5xx answers + upstream failures) / requests above this rolls back. */
  maxErrorRatio: number
  /** p99 latency (ms) above this rolls back; 0 turns the latency check off. */
  maxP99: number
  /** A watched color (or a rollout's target) with no available upstream for this long is rolled back; 0 = off. */
  unavailableFor: number
}

export interface RolloutConfig {
  /** What a step whose time is up does when it has too few requests to judge: wait for them, or move on. */
  onLowTraffic: 'hold' | 'proceed'
}

export interface DrainConfig {
  /** After a switch, WebSockets and requests still on the color that lost its traffic are closed after this; 0 leaves them open. */
  timeout: number
}

export interface StatusRange {
  min: number
  max: number
}

export interface SmokeCheckConfig {
  name: string
  method: string
  /** The path and query sent, as written. */
  path: string
  headers: Readonly<Record<string, string>>
  body: string | undefined
  /** The statuses that pass: any of these ranges (a single status is a range of one). */
  status: readonly StatusRange[]
  /** A substring the response body must contain. */
  bodyContains: string | undefined
  /** Dotted paths into the JSON body and the value expected at each. */
  json: Readonly<Record<string, unknown>> | undefined
  /** The answer (headers and body) must arrive within this many ms. */
  maxLatency: number | undefined
}

export interface SmokeConfig {
  checks: readonly SmokeCheckConfig[]
  /** Each check gives up after this long, and fails. */
  timeout: number
  /**
   * Which changes run the checks first on the color that gains traffic: a switch, new weights, a rollout's start,
   * each later step of a rollout (the release guard holds the step while they fail), a promote.
   */
  on: { switch: boolean; weights: boolean; rollout: boolean; rolloutStep: boolean; promote: boolean }
}

export interface StandbyConfig {
  /** How long (ms) the color a change took all traffic from stays on standby, the instant rollback target. */
  keepFor: number
}

/** What happened, as a webhook target names it in `notify[].events` (README "Notifications"). */
export type NotifyEvent =
  | 'switch'
  | 'rollback'
  | 'rollout-step'
  | 'rollout-complete'
  | 'rollout-abort'
  | 'rollout-paused'
  | 'smoke-failed'
  | 'replica-missing'
  | 'replica-lagging'
  | 'standby-over'

export interface NotifyTargetConfig {
  /** The metric's `target` label and what the audit trail names; the URL's host by default. */
  name: string
  url: string
  events: readonly NotifyEvent[]
  /** json: the notification as it is; slack: Slack's incoming-webhook shape, `{text, blocks}`. */
  format: 'json' | 'slack'
  /** The HMAC-SHA256 key the body is signed with (x-bluegreen-signature); unsigned when absent. */
  secret: string | undefined
  /** Each attempt gives up after this long (ms). */
  timeout: number
  /** Retries stop once this long (ms) has passed since the first attempt; 0 is one attempt only. */
  retryFor: number
  /** The wait before the first retry (ms), doubled before each next one. */
  backoff: number
}

export interface MetricsConfig {
  enabled: boolean
}

/** A certificate and its private key (PEM files, absolute paths). */
export interface CertificateFiles {
  cert: string
  key: string
}

/** A certificate served to clients that ask (SNI) for one of its names; "*.example.com" matches one label. */
export interface SniCertificate extends CertificateFiles {
  names: readonly string[]
}

/** HTTP/2 to clients over TLS, and its limits (README "TLS and HTTP/2"). */
export interface Http2Config {
  /** Offer h2 in ALPN (HTTP/1.1 stays for clients without it); false: HTTP/1.1 only. */
  enabled: boolean
  /** Streams a client may have open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams: number
  /** Bytes of request headers (HPACK-decoded, 32 bytes per field added) a stream may send. */
  maxHeaderListSize: number
  /** Invalid frames a connection may send before it is closed. */
  maxSessionInvalidFrames: number
  /** Streams a connection may have refused (over the limit, reset at once) before it is closed. */
  maxSessionRejectedStreams: number
}

/** TLS on the public listener; null: plain HTTP/1.1. */
export interface ListenerTlsConfig extends CertificateFiles {
  sni: readonly SniCertificate[]
  minVersion: 'TLSv1.2' | 'TLSv1.3'
  /** How often the certificate files are looked at for a renewal; 0: never. */
  watchInterval: number
  /** A plain-HTTP listener that answers every request with a 308 to the same URL over https; null: none. */
  redirectFrom: ListenAddress | null
  http2: Http2Config
}

export interface Config {
  listen: ListenAddress
  tls: ListenerTlsConfig | null
  admin: AdminConfig
  pools: Readonly<Record<Color, PoolConfig>>
  state: StateConfig
  proxy: ProxyConfig
  routing: RoutingConfig
  log: LogConfig
  shutdown: ShutdownConfig
  rollback: RollbackConfig
  rollout: RolloutConfig
  drain: DrainConfig
  metrics: MetricsConfig
  smoke: SmokeConfig
  standby: StandbyConfig
  notify: readonly NotifyTargetConfig[]
  mirror: MirrorConfig
}

/** mirror: copies of live requests to the idle color, compared with the live answers (README "Mirroring"). */
export interface MirrorConfig {
  /** The share POST /mirror {"enabled": true} turns on without naming one. */
  percent: number
  /** Only these methods are copied: a mirrored POST has side effects. */
  methods: string[]
  /** Only paths starting with one of these; none: every path. */
  pathPrefixes: string[]
  /** Copies under way at once; beyond it a copy is dropped (and counted). */
  maxInFlight: number
  /** How long a copy (and a noise sample) may take, ms. */
  timeout: number
  /** A request body longer than this is not copied (counted as dropped). */
  maxBodyBytes: number
  /** How far back the mismatch ratio looks, ms. */
  window: number
  compare: {
    /** Response headers compared (lower case). */
    headers: string[]
    /** JSON paths never counted as differences ("$.meta.time", "$.items[*].id"). */
    ignore: string[]
    /** The share of copies for which the live color is asked twice, to learn which fields are noise. */
    noiseSampleRate: number
    /** Bytes of each response body kept for comparison. */
    maxCaptureBytes: number
  }
  /** How many of the latest differences GET /mirror/diffs keeps. */
  diffs: number
  gate: {
    maxMismatchRatio: number
    minCompared: number
    on: { switch: boolean; weights: boolean; rollout: boolean }
  }
}
