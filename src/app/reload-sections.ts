import type { AdminServer } from '../admin/server.ts'
import type { Config } from '../config/types.ts'
import type { UpstreamHealth } from '../health/health.ts'
import type { Notifier } from '../notify/notifier.ts'
import type { Mirror } from '../proxy/mirror.ts'
import type { ProxyListener } from '../proxy/server.ts'
import type { ReleaseGuard } from '../rollout/release-guard.ts'
import type { RoutingTable } from '../routing/table.ts'
import type { UpstreamPools } from '../routing/upstream-pools.ts'

// The one list of what a reload can apply without a restart. Each section names the config keys it covers (README
// "Configuration" paths; "*" is any one key) and how to apply a new config to the running parts. A changed key no
// section covers needs a restart and refuses the whole reload, so a key added to the schema is never ignored by a
// reload: making it reloadable means adding a section here.

/** The running parts a reload applies to. */
export interface ReloadTargets {
  upstreams: UpstreamPools
  health: UpstreamHealth
  table: RoutingTable
  proxy: ProxyListener
  admin: AdminServer
  guard: ReleaseGuard
  notifier: Notifier
  mirror: Mirror
  /** The state store's standby.keepFor, for its changes from now on. */
  keepStandbyFor: (ms: number) => void
}

export interface ReloadSection {
  name: string
  /** The keys it applies: a change to one of them can be made without a restart. */
  keys: readonly string[]
  /** Keys another section applies that this one also reads, so it is run again when they change. */
  reads?: readonly string[]
  /** Applies the whole new config's share of this section. Runs only when one of its keys changed; must not throw. */
  apply(targets: ReloadTargets, next: Config): void
}

export const RELOAD_SECTIONS: readonly ReloadSection[] = [
  {
    // Upstreams first: the settings below may name them (the admin API probes them before a change).
    name: 'pools',
    keys: [
      'pools.*.upstreams',
      'pools.*.balance',
      'pools.*.maxConnectionsPerUpstream',
      'pools.*.healthCheck',
      'pools.*.outlier',
      // Their TLS options (files read again): an upstream whose options change is replaced, the old one drains.
      'pools.*.tls',
      // The upstream connection pools are made with these.
      'proxy.timeouts.connect',
      'proxy.timeouts.header',
      'proxy.timeouts.body',
      'proxy.timeouts.upstreamIdle',
    ],
    apply: ({ upstreams, health, table }, next) => {
      upstreams.replace(next.pools, next.proxy.timeouts)
      health.replace(upstreams.current, next.pools)
      table.reconfigure(upstreams.current, { blue: next.pools.blue.balance, green: next.pools.green.balance })
    },
  },
  {
    name: 'proxy',
    keys: [
      'proxy.timeouts.clientIdle',
      'proxy.timeouts.clientHeader',
      'proxy.timeouts.clientRequest',
      'proxy.retries',
      'proxy.preserveHost',
      'proxy.trustedProxies',
      'routing',
    ],
    apply: ({ proxy }, next) => proxy.reconfigure(next),
  },
  {
    name: 'admin',
    keys: ['admin.tokens', 'admin.allowedHosts', 'admin.allowedOrigins', 'admin.waitTimeout', 'smoke'],
    // It probes a pool before sending it traffic, and smoke checks send the Host header as the proxy does.
    reads: ['pools', 'proxy.preserveHost'],
    apply: ({ admin }, next) =>
      admin.reconfigure({
        config: next.admin,
        pools: next.pools,
        smoke: { config: next.smoke, preserveHost: next.proxy.preserveHost },
      }),
  },
  {
    name: 'release guard',
    keys: [
      'rollback.enabled',
      'rollback.watch',
      'rollback.evaluateEvery',
      'rollback.minRequests',
      'rollback.maxErrorRatio',
      'rollback.maxP99',
      'rollback.unavailableFor',
      'rollout',
    ],
    apply: ({ guard }, next) => guard.reconfigure(next.rollback, next.rollout),
  },
  {
    // The listener's certificates: new handshakes get the new set, open connections keep theirs. The files were read
    // and checked with the new config; one changed since then leaves the running certificates (update() logs it).
    // Adding or removing `tls`, its HTTP/2 settings or redirectFrom changes the listener itself: a restart.
    name: 'certificates',
    keys: ['tls.cert', 'tls.key', 'tls.sni', 'tls.minVersion', 'tls.watchInterval'],
    apply: ({ proxy }, next) => {
      if (next.tls) proxy.certificates?.update(next.tls)
    },
  },
  {
    // The store stamps each change that starts a standby with keepUntil = now + keepFor (the Redis CHANGE script
    // takes it as an argument): a standby already in force keeps its keepUntil.
    name: 'standby',
    keys: ['standby.keepFor'],
    apply: ({ keepStandbyFor }, next) => keepStandbyFor(next.standby.keepFor),
  },
  {
    // The list is one key: targets are matched by name inside the notifier.
    name: 'notify',
    keys: ['notify'],
    apply: ({ notifier }, next) => notifier.reconfigure(next.notify),
  },
  {
    name: 'mirror',
    keys: ['mirror'],
    apply: ({ mirror }, next) => mirror.reconfigure(next.mirror),
  },
  {
    // Read from the running config when shutdown begins: nothing to apply.
    name: 'shutdown',
    keys: ['shutdown'],
    apply: () => {},
  },
]

/** Every key a reload can apply. */
export const RELOADABLE_KEYS: readonly string[] = RELOAD_SECTIONS.flatMap((section) => section.keys)
