import { describe, expect, it } from 'vitest'
import { RELOAD_SECTIONS, RELOADABLE_KEYS } from '../../src/app/reload-sections.ts'
import { changedKeys, keyMatches, planReload } from '../../src/config/changes.ts'
import { buildConfig } from '../../src/config/schema.ts'
import type { Config } from '../../src/config/types.ts'

const base = {
  listen: '127.0.0.1:8080',
  admin: { listen: '127.0.0.1:9090', token: 'secret' },
  pools: { blue: { upstreams: ['http://10.0.0.1:80'] }, green: { upstreams: ['http://10.0.1.1:80'] } },
  state: { path: '/tmp/state.json' },
}

function config(changes: Record<string, unknown> = {}): Config {
  return buildConfig({ ...base, ...changes }, {})
}

describe('changedKeys', () => {
  it('finds nothing between a config and itself, or its copy through JSON (a cluster worker gets one)', () => {
    const running = config({ smoke: { checks: [{ name: 'home', path: '/' }] } })
    expect(changedKeys(running, running)).toEqual([])
    expect(changedKeys(running, JSON.parse(JSON.stringify(running)) as Config)).toEqual([])
  })

  it('names each changed key by its path, a list as one key, a listen address as one key', () => {
    const next = config({
      listen: '127.0.0.1:8081',
      pools: {
        blue: { upstreams: ['http://10.0.0.1:80', 'http://10.0.0.2:80'], healthCheck: { interval: '2s' } },
        green: { upstreams: ['http://10.0.1.1:80'] },
      },
      proxy: { timeouts: { header: '10s' } },
    })
    expect(changedKeys(config(), next)).toEqual([
      'listen',
      'pools.blue.healthCheck.interval',
      'pools.blue.upstreams',
      'proxy.timeouts.header',
    ])
  })
})

describe('keyMatches', () => {
  it('matches a key under a pattern, "*" standing for any one key', () => {
    expect(keyMatches('pools.*.healthCheck', 'pools.green.healthCheck.interval')).toBe(true)
    expect(keyMatches('rollout', 'rollout.onLowTraffic')).toBe(true)
    expect(keyMatches('pools.*.healthCheck', 'pools.green.tls.ca')).toBe(false)
    expect(keyMatches('proxy.timeouts.connect', 'proxy.timeouts')).toBe(false)
    expect(keyMatches('admin.tokens', 'admin.tokensExtra')).toBe(false)
  })
})

describe('planReload', () => {
  it('lets through what the sections apply: upstreams, health checks, timeouts, retries, tokens, rollback, smoke', () => {
    const next = config({
      admin: { listen: '127.0.0.1:9090', token: 'rotated' },
      pools: {
        blue: {
          upstreams: ['http://10.0.0.2:80'],
          healthCheck: { path: '/ready' },
          balance: 'least-outstanding',
        },
        green: { upstreams: ['http://10.0.1.1:80'], outlier: { consecutiveFailures: 3 } },
      },
      proxy: { timeouts: { connect: '1s', clientIdle: '10s' }, retries: { max: 2 } },
      rollback: { maxErrorRatio: 0.2 },
      rollout: { onLowTraffic: 'proceed' },
      smoke: { checks: [{ name: 'home', path: '/' }] },
      shutdown: { grace: '20s' },
    })
    const plan = planReload(config(), next, RELOADABLE_KEYS)
    expect(plan.needsRestart).toEqual([])
    expect(plan.changed).toContain('admin.tokens')
    expect(plan.changed).toContain('pools.blue.upstreams')
  })

  it('lets through standby.keepFor, the notify targets and every mirror setting', () => {
    const next = config({
      standby: { keepFor: '2h' },
      notify: [{ url: 'https://hooks.example.com/deploys', events: ['switch'], secret: 'rotated' }],
      mirror: {
        percent: 25,
        methods: ['GET', 'HEAD'],
        pathPrefixes: ['/api'],
        maxInFlight: 8,
        timeout: '2s',
        window: '5m',
        compare: { headers: ['content-type', 'etag'], ignore: ['$.meta.time'], noiseSampleRate: 0.5 },
        diffs: 10,
        gate: { maxMismatchRatio: 0.05, minCompared: 10, on: { weights: true } },
      },
    })
    const plan = planReload(config(), next, RELOADABLE_KEYS)
    expect(plan.needsRestart).toEqual([])
    expect(plan.changed).toEqual(
      expect.arrayContaining(['standby.keepFor', 'notify', 'mirror.percent', 'mirror.compare.headers']),
    )
  })

  it('names every key that needs a restart: listeners, the store, and any key no section applies', () => {
    const next = config({
      listen: '127.0.0.1:8081',
      admin: { listen: '127.0.0.1:9091', token: 'secret' },
      state: { path: '/tmp/other.json' },
      log: { level: 'debug' },
    })
    expect(planReload(config(), next, RELOADABLE_KEYS).needsRestart).toEqual([
      'admin.listen',
      'listen',
      'log.level',
      'state.path',
    ])
  })

  it('refuses a key it does not know, such as one a later version adds, rather than ignore it', () => {
    const running = config()
    const withTls = { ...running, tls: { cert: '/etc/cert.pem' } } as unknown as Config
    const poolTls = {
      ...running,
      pools: { ...running.pools, green: { ...running.pools.green, tls: { ca: '/ca.pem' } } },
    } as unknown as Config
    const unknown = { ...running, future: { setting: 1 } } as unknown as Config
    // Turning TLS on makes another listener: a restart. A pool's TLS options reload (the upstreams are replaced).
    expect(planReload(running, withTls, RELOADABLE_KEYS).needsRestart).toEqual(['tls'])
    expect(planReload(running, poolTls, RELOADABLE_KEYS).needsRestart).toEqual([])
    expect(planReload(running, unknown, RELOADABLE_KEYS).needsRestart).toEqual(['future'])
  })

  it('every section names at least one key, and no key belongs to two sections', () => {
    for (const section of RELOAD_SECTIONS) expect(section.keys.length, section.name).toBeGreaterThan(0)
    expect(new Set(RELOADABLE_KEYS).size).toBe(RELOADABLE_KEYS.length)
  })
})
