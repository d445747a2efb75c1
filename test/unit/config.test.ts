// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these strings test the config file's own ${VAR} syntax
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../../src/config/load.ts'
import { buildConfig } from '../../src/config/schema.ts'
import { parseDuration, parseListen } from '../../src/config/validate.ts'
import { BlueGreenError, ConfigError, type ConfigProblem } from '../../src/errors.ts'

const minimal = { pools: { blue: { upstreams: ['http://127.0.0.1:3001'] }, green: { upstreams: [] } } }

/** The problems buildConfig reports for `raw`, or fails the test when it accepts it. */
function problemsOf(raw: unknown, env: NodeJS.ProcessEnv = {}): ConfigProblem[] {
  try {
    buildConfig(raw, env)
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    return [...(error as ConfigError).problems]
  }
  throw new Error('expected the config to be rejected')
}

function messageAt(problems: ConfigProblem[], path: string): string | undefined {
  return problems.find((problem) => problem.path === path)?.message
}

function withPools(extra: Record<string, unknown>): Record<string, unknown> {
  return { ...minimal, ...extra }
}

describe('buildConfig', () => {
  it('reads mirror with its defaults, and reports every problem in it at once', () => {
    const defaults = buildConfig(minimal, {}).mirror
    expect(defaults).toMatchObject({
      percent: 10,
      methods: ['GET', 'HEAD'],
      pathPrefixes: [],
      maxInFlight: 64,
      timeout: 2000,
      maxBodyBytes: 65536,
      compare: { headers: ['content-type'], ignore: [], noiseSampleRate: 0.1 },
      gate: {
        maxMismatchRatio: 0.01,
        minCompared: 100,
        on: { switch: false, weights: false, rollout: false },
      },
    })
    const config = buildConfig(
      withPools({ mirror: { methods: ['get', 'PUT'], compare: { ignore: ['meta.time', '$.items[*].id'] } } }),
      {},
    )
    expect(config.mirror.methods).toEqual(['GET', 'PUT'])
    expect(config.mirror.compare.ignore).toEqual(['$.meta.time', '$.items[*].id'])
    const problems = problemsOf(
      withPools({
        mirror: {
          percent: 0,
          methods: ['FETCH'],
          pathPrefixes: ['api'],
          timeout: 'soon',
          compare: { noiseSampleRate: 2, ignore: ['a..b'], header: [] },
          gate: { on: { swich: true } },
        },
      }),
    )
    expect(messageAt(problems, 'mirror.percent')).toMatch(/an integer from 1 to 100/)
    expect(messageAt(problems, 'mirror.methods[0]')).toMatch(/methods such as GET/)
    expect(messageAt(problems, 'mirror.pathPrefixes[0]')).toMatch(/paths starting with "\/"/)
    expect(messageAt(problems, 'mirror.timeout')).toMatch(/^expected a duration/)
    expect(messageAt(problems, 'mirror.compare.noiseSampleRate')).toMatch(/a fraction from 0 to 1/)
    expect(messageAt(problems, 'mirror.compare.ignore[0]')).toMatch(/JSON paths/)
    expect(messageAt(problems, 'mirror.compare.header')).toMatch(/did you mean "headers"/)
    expect(messageAt(problems, 'mirror.gate.on.swich')).toMatch(/did you mean "switch"/)
  })

  it('reads smoke checks with their defaults, and reports every problem in them at once', () => {
    const config = buildConfig(
      withPools({
        smoke: {
          checks: [
            { name: 'home', path: '/' },
            {
              name: 'api',
              method: 'POST',
              path: '/api?x=1',
              status: [200, '300-399'],
              json: { 'a.b': 1 },
              maxLatency: '1s',
            },
          ],
        },
      }),
      {},
    )
    expect(config.smoke.checks[0]).toEqual({
      name: 'home',
      method: 'GET',
      path: '/',
      headers: {},
      body: undefined,
      status: [{ min: 200, max: 200 }],
      bodyContains: undefined,
      json: undefined,
      maxLatency: undefined,
    })
    expect(config.smoke.checks[1]).toMatchObject({
      method: 'POST',
      status: [
        { min: 200, max: 200 },
        { min: 300, max: 399 },
      ],
      json: { 'a.b': 1 },
      maxLatency: 1000,
    })

    const problems = problemsOf(
      withPools({
        smoke: {
          timeout: 'soon',
          on: { swich: false },
          checks: [
            { name: 'a', path: 'no-slash', status: '299-200', methd: 'GET' },
            { path: '/', headers: { x: 1 }, method: 'FETCH' },
            { name: 'a', path: '/' },
          ],
        },
      }),
    )
    expect(messageAt(problems, 'smoke.timeout')).toMatch(/^expected a duration/)
    expect(messageAt(problems, 'smoke.on.swich')).toMatch(/did you mean "switch"/)
    expect(messageAt(problems, 'smoke.checks[0].path')).toMatch(/a path starting with "\/"/)
    expect(messageAt(problems, 'smoke.checks[0].status')).toMatch(/a range \("200-299"\)/)
    expect(messageAt(problems, 'smoke.checks[0].methd')).toMatch(/did you mean "method"/)
    expect(messageAt(problems, 'smoke.checks[1].name')).toMatch(/^required/)
    expect(messageAt(problems, 'smoke.checks[1].headers')).toMatch(/header names to string values/)
    expect(messageAt(problems, 'smoke.checks[1].method')).toMatch(/^expected one of: GET/)
    expect(messageAt(problems, 'smoke.checks[2].name')).toBe('another check has this name')
  })

  it('fills in every default for a minimal config', () => {
    const config = buildConfig(minimal, {})
    expect(config).toEqual({
      listen: { host: '0.0.0.0', port: 8080 },
      tls: null,
      admin: {
        listen: { host: '127.0.0.1', port: 9090 },
        tokens: [],
        allowedHosts: ['localhost', '127.0.0.1', '::1'],
        allowedOrigins: [],
        waitTimeout: 5000,
        auditKeep: 1000,
      },
      pools: {
        blue: {
          upstreams: [{ url: 'http://127.0.0.1:3001', origin: 'http://127.0.0.1:3001' }],
          tls: null,
          balance: 'round-robin',
          maxConnectionsPerUpstream: 128,
          healthCheck: {
            enabled: true,
            path: '/',
            timeout: 2000,
            interval: 5000,
            healthyThreshold: 2,
            unhealthyThreshold: 3,
          },
          outlier: {
            consecutiveFailures: 5,
            ejectionTime: 30000,
            maxEjectionTime: 300000,
            maxEjectedPercent: 50,
          },
        },
        green: {
          upstreams: [],
          tls: null,
          balance: 'round-robin',
          maxConnectionsPerUpstream: 128,
          healthCheck: {
            enabled: true,
            path: '/',
            timeout: 2000,
            interval: 5000,
            healthyThreshold: 2,
            unhealthyThreshold: 3,
          },
          outlier: {
            consecutiveFailures: 5,
            ejectionTime: 30000,
            maxEjectionTime: 300000,
            maxEjectedPercent: 50,
          },
        },
      },
      state: {
        store: 'file',
        path: resolve(process.cwd(), 'bluegreen-state.json'),
        initial: 'blue',
        maxStaleness: 0,
      },
      proxy: {
        timeouts: {
          connect: 5000,
          header: 60_000,
          body: 60_000,
          upstreamIdle: 30_000,
          clientIdle: 65_000,
          clientHeader: 30_000,
          clientRequest: 300_000,
        },
        retries: {
          max: 1,
          methods: ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'],
          on: ['reset'],
          budget: { percent: 20, minPerSecond: 3 },
        },
        preserveHost: true,
        trustedProxies: [],
        colorHeader: 'x-bluegreen-color',
      },
      routing: {
        sticky: { mode: 'cookie', cookie: 'bluegreen_color', header: 'x-user-id', cookieMaxAge: 86_400_000 },
        previewHeader: null,
      },
      log: { level: 'info', format: 'auto', access: false },
      shutdown: { delay: 0, grace: 30_000 },
      rollback: {
        enabled: true,
        window: 30_000,
        watch: 300_000,
        evaluateEvery: 1_000,
        minRequests: 50,
        maxErrorRatio: 0.05,
        maxP99: 2_000,
        unavailableFor: 5_000,
      },
      rollout: { onLowTraffic: 'hold' },
      drain: { timeout: 30_000 },
      metrics: { enabled: true },
      smoke: {
        checks: [],
        timeout: 5_000,
        on: { switch: true, weights: true, rollout: true, rolloutStep: true, promote: true },
      },
      standby: { keepFor: 24 * 3600_000 },
      notify: [],
      mirror: {
        percent: 10,
        methods: ['GET', 'HEAD'],
        pathPrefixes: [],
        maxInFlight: 64,
        timeout: 2_000,
        maxBodyBytes: 65_536,
        window: 300_000,
        compare: { headers: ['content-type'], ignore: [], noiseSampleRate: 0.1, maxCaptureBytes: 262_144 },
        diffs: 50,
        gate: {
          maxMismatchRatio: 0.01,
          minCompared: 100,
          on: { switch: false, weights: false, rollout: false },
        },
      },
    })
  })

  it('reads standby.keepFor as a duration, and refuses what is not one', () => {
    expect(buildConfig({ ...minimal, standby: { keepFor: '48h' } }, {}).standby.keepFor).toBe(48 * 3600_000)
    const problems = problemsOf({ ...minimal, standby: { keepFor: 'soon', keepFour: 1 } })
    expect(messageAt(problems, 'standby.keepFor')).toMatch(/^expected a duration of at least 1000ms/)
    expect(messageAt(problems, 'standby.keepFour')).toMatch(/did you mean "keepFor"/)
    expect(messageAt(problemsOf({ ...minimal, standby: { keepFor: '500ms' } }), 'standby.keepFor')).toMatch(
      /at least 1000ms/,
    )
  })

  it('never echoes a webhook or Redis URL or a secret in a problem: a URL may hold its own secret, and problems reach the reload answer', () => {
    const problems = problemsOf(
      withPools({
        notify: [
          { url: 'https://user:hunter4@hooks.example.com/' },
          { url: 'htps://hooks.slack.com/services/T000/B000/hunter4hunter4' },
          { url: 'https://hooks.example.com/ok', secret: 4_000_000_000_4 },
          { url: 'https://hooks.example.com/ok2', secret: true },
        ],
      }),
    )
    expect(messageAt(problems, 'notify[0].url')).toMatch(/without user:password@/)
    expect(messageAt(problems, 'notify[1].url')).toMatch(/an http:\/\/ or https:\/\/ URL/)
    expect(messageAt(problems, 'notify[2].secret')).toMatch(/a non-empty string.*got a number/)
    expect(messageAt(problems, 'notify[3].secret')).toMatch(/got a boolean/)
    expect(JSON.stringify(problems)).not.toMatch(/hunter4|40000000000004|hooks\.slack/)
    const redis = problemsOf(
      withPools({
        state: {
          store: 'redis',
          redis: { url: 'redis//:hunter4@cache:6379', sentinelPassword: 4_000_000_000_4 },
        },
      }),
    )
    expect(messageAt(redis, 'state.redis.url')).toMatch(/a redis:\/\/ or rediss:\/\/ URL/)
    expect(messageAt(redis, 'state.redis.sentinelPassword')).toMatch(/got a number/)
    expect(JSON.stringify(redis)).not.toMatch(/hunter4|40000000000004/)
  })

  it('reads notify targets with their defaults, ${VAR} in a secret, and reports every problem with its key path', () => {
    const config = buildConfig(
      withPools({
        notify: [
          { url: 'https://hooks.example.com:8443/bluegreen', secret: '${HOOK_SECRET}' },
          {
            name: 'chat',
            url: 'http://127.0.0.1:9/x',
            events: ['rollback', 'switch'],
            format: 'slack',
            retryFor: '2m',
            backoff: '1s',
            timeout: '2s',
          },
        ],
      }),
      { HOOK_SECRET: 's3cret' },
    )
    expect(config.notify[0]).toEqual({
      name: 'hooks.example.com:8443',
      url: 'https://hooks.example.com:8443/bluegreen',
      events: [
        'switch',
        'rollback',
        'rollout-step',
        'rollout-complete',
        'rollout-abort',
        'rollout-paused',
        'smoke-failed',
        'replica-missing',
        'replica-lagging',
        'standby-over',
      ],
      format: 'json',
      secret: 's3cret',
      timeout: 5_000,
      retryFor: 60_000,
      backoff: 500,
    })
    expect(config.notify[1]).toMatchObject({
      name: 'chat',
      events: ['rollback', 'switch'],
      format: 'slack',
      secret: undefined,
      timeout: 2_000,
      retryFor: 120_000,
      backoff: 1_000,
    })

    const problems = problemsOf(
      withPools({
        notify: [
          { url: 'ftp://example.com/x', events: ['swich'], format: 'teams', secret: '' },
          { events: [], timeout: '2h', sekret: 'x' },
          { url: 'https://user:pw@example.com/' },
          { url: 'https://a.example.com/1' },
          { url: 'https://a.example.com/2' },
          null,
        ],
      }),
    )
    expect(messageAt(problems, 'notify[0].url')).toMatch(/an http:\/\/ or https:\/\/ URL/)
    expect(messageAt(problems, 'notify[0].events[0]')).toMatch(/did you mean "switch"/)
    expect(messageAt(problems, 'notify[0].format')).toMatch(/expected one of: json, slack/)
    expect(messageAt(problems, 'notify[0].secret')).toMatch(/a non-empty string/)
    expect(messageAt(problems, 'notify[1].url')).toMatch(/^required/)
    expect(messageAt(problems, 'notify[1].events')).toMatch(/at least one event/)
    expect(messageAt(problems, 'notify[1].timeout')).toMatch(/^expected a duration/)
    expect(messageAt(problems, 'notify[1].sekret')).toMatch(/did you mean "secret"/)
    expect(messageAt(problems, 'notify[2].url')).toMatch(/URL/)
    expect(messageAt(problems, 'notify[4].name')).toMatch(/another target is named "a.example.com"/)
    expect(messageAt(problems, 'notify[5]')).toMatch(/expected a target/)
    expect(messageAt(problemsOf(withPools({ notify: { url: 'x' } })), 'notify')).toMatch(/expected a list/)
    expect(
      messageAt(
        problemsOf(withPools({ notify: [{ url: 'https://x.example/', secret: '${NOPE}' }] })),
        'notify[0].secret',
      ),
    ).toMatch(/NOPE/)
  })

  it('returns a deeply frozen config', () => {
    const config = buildConfig(minimal, {})
    expect(Object.isFrozen(config)).toBe(true)
    expect(Object.isFrozen(config.pools.blue.upstreams)).toBe(true)
    expect(Object.isFrozen(config.pools.blue.upstreams[0])).toBe(true)
    expect(Object.isFrozen(config.proxy.timeouts)).toBe(true)
    expect(() => {
      ;(config.listen as { port: number }).port = 1
    }).toThrow(TypeError)
  })

  it('reports unknown keys at every level, with the closest known key', () => {
    const problems = problemsOf({
      listn: ':8080',
      pools: {
        blue: { upstream: ['http://a:1'], upstreams: [] },
        green: { upstreams: ['http://b:1'] },
        red: {},
      },
      proxy: { timeouts: { conect: '1s' } },
      routing: { sticky: { cookiee: 'x', zzzzzz: 1 } },
    })
    expect(messageAt(problems, 'listn')).toMatch(
      /^unknown key; expected one of: listen, admin, .*did you mean "listen"\?$/,
    )
    expect(messageAt(problems, 'pools.blue.upstream')).toContain('did you mean "upstreams"?')
    expect(messageAt(problems, 'pools.red')).toBe('unknown key; expected one of: blue, green')
    expect(messageAt(problems, 'proxy.timeouts.conect')).toContain('did you mean "connect"?')
    expect(messageAt(problems, 'routing.sticky.cookiee')).toContain('did you mean "cookie"?')
    expect(messageAt(problems, 'routing.sticky.zzzzzz')).not.toContain('did you mean')
  })

  it('reports every problem at once', () => {
    const problems = problemsOf({
      listen: 'nowhere',
      pools: { blue: { upstreams: 'http://a:1', balance: 'random' } },
      state: { store: 'sqlite', initial: 'red' },
      log: { level: 'verbose', access: 'maybe' },
      shutdown: { grace: -1 },
    })
    expect(problems.map((problem) => problem.path).sort()).toEqual([
      'listen',
      'log.access',
      'log.level',
      'pools.blue.balance',
      'pools.blue.upstreams',
      'pools.green',
      'shutdown.grace',
      'state.initial',
      'state.store',
    ])
    expect(messageAt(problems, 'pools.green')).toMatch(/^required/)
    expect(messageAt(problems, 'state.store')).toBe('expected one of: file, redis, got "sqlite"')
  })

  it('requires pools, and an upstream in at least one of them', () => {
    expect(problemsOf({})).toEqual([{ path: 'pools', message: expect.stringMatching(/^required/) }])
    expect(problemsOf(null)).toEqual([{ path: 'pools', message: expect.stringMatching(/^required/) }])
    expect(problemsOf('pools')).toEqual([
      { path: '', message: expect.stringMatching(/^expected a mapping/) },
      { path: 'pools', message: expect.stringMatching(/^required/) },
    ])
    const empty = problemsOf({ pools: { blue: { upstreams: [] }, green: { upstreams: [] } } })
    expect(empty).toEqual([
      { path: 'pools', message: expect.stringContaining('both pools have no upstreams') },
    ])
    expect(problemsOf({ pools: { blue: {}, green: { upstreams: [] } } })).toEqual(empty)
  })

  it('checks upstream URLs', () => {
    const problems = problemsOf({
      pools: {
        blue: {
          upstreams: [
            'http://10.0.0.1:8080/',
            'https://[::1]:8443',
            'http://10.0.0.1:8080',
            'ftp://10.0.0.2',
            'http://user:secret@10.0.0.3',
            'http://10.0.0.4/api',
            'http://10.0.0.5?x=1',
            'not a url',
            8080,
          ],
        },
        green: { upstreams: ['http://10.0.0.1:8080'] },
      },
    })
    expect(messageAt(problems, 'pools.blue.upstreams[0]')).toBeUndefined()
    expect(messageAt(problems, 'pools.blue.upstreams[1]')).toBeUndefined()
    expect(messageAt(problems, 'pools.blue.upstreams[2]')).toContain('duplicate of pools.blue.upstreams[0]')
    expect(messageAt(problems, 'pools.blue.upstreams[3]')).toContain('http:// or https://')
    expect(messageAt(problems, 'pools.blue.upstreams[4]')).toContain('credentials')
    expect(messageAt(problems, 'pools.blue.upstreams[4]')).not.toContain('secret')
    expect(messageAt(problems, 'pools.blue.upstreams[5]')).toContain('no path')
    expect(messageAt(problems, 'pools.blue.upstreams[6]')).toContain('query')
    expect(messageAt(problems, 'pools.blue.upstreams[7]')).toContain('got "not a url"')
    expect(messageAt(problems, 'pools.blue.upstreams[8]')).toContain('got 8080')
    expect(problems).toHaveLength(7)

    const config = buildConfig(
      { pools: { blue: { upstreams: ['https://Example.com:443/'] }, green: {} } },
      {},
    )
    expect(config.pools.blue.upstreams[0]).toEqual({
      url: 'https://Example.com:443/',
      origin: 'https://example.com',
    })
  })

  it('converts durations, header names and the color header switch', () => {
    const config = buildConfig(
      withPools({
        proxy: { timeouts: { connect: '250ms', header: 1500, clientRequest: 0 }, colorHeader: false },
        routing: { sticky: { mode: 'header', header: 'X-Tenant', cookieMaxAge: '7d' }, preview: {} },
        shutdown: { delay: '1.5s', grace: '2m' },
      }),
      {},
    )
    expect(config.proxy.timeouts).toMatchObject({ connect: 250, header: 1500, clientRequest: 0 })
    expect(config.proxy.colorHeader).toBeNull()
    expect(config.routing.sticky).toMatchObject({
      mode: 'header',
      header: 'x-tenant',
      cookieMaxAge: 7 * 86_400_000,
    })
    expect(config.routing.previewHeader).toBe('x-bluegreen-preview')
    expect(config.shutdown).toEqual({ delay: 1500, grace: 120_000 })

    const problems = problemsOf(
      withPools({
        proxy: {
          timeouts: { connect: 0, body: '5 s', clientHeader: '10m', clientRequest: '1m' },
          colorHeader: true,
        },
        routing: { preview: { header: 'bad header' } },
      }),
    )
    expect(messageAt(problems, 'proxy.timeouts.connect')).toMatch(/^expected a duration of at least 1ms/)
    expect(messageAt(problems, 'proxy.timeouts.body')).toMatch(/got "5 s"$/)
    expect(messageAt(problems, 'proxy.timeouts.clientHeader')).toContain('clientRequest')
    expect(messageAt(problems, 'proxy.colorHeader')).toContain('or false')
    expect(messageAt(problems, 'routing.preview.header')).toContain('header name')
  })

  it('validates state, redis and sentinels', () => {
    const config = buildConfig(
      withPools({
        state: {
          store: 'redis',
          path: '/var/lib/bg.json',
          initial: 'green',
          redis: { sentinels: ['10.0.0.5:26379', { host: 'sentinel-2', port: 26379 }], name: 'mymaster' },
        },
      }),
      {},
    )
    expect(config.state).toEqual({
      store: 'redis',
      path: '/var/lib/bg.json',
      initial: 'green',
      maxStaleness: 0,
      redis: {
        url: 'redis://127.0.0.1:6379',
        key: 'bluegreen:default',
        sentinels: [
          { host: '10.0.0.5', port: 26379 },
          { host: 'sentinel-2', port: 26379 },
        ],
        name: 'mymaster',
        commandTimeout: 1000,
        connectTimeout: 2000,
        pollInterval: 5000,
        heartbeatInterval: 1000,
        forgetMissingAfter: 600_000,
        lastStateFile: '/var/lib/bluegreen/last-state.json',
      },
    })

    expect(problemsOf(withPools({ state: { store: 'redis' } }))).toEqual([
      { path: 'state.redis', message: expect.stringMatching(/^required/) },
    ])
    const problems = problemsOf(
      withPools({
        state: { redis: { url: 'http://x:1', sentinels: [':26379', { host: 'a', port: 0, tls: 1 }] } },
      }),
    )
    expect(problems.map((problem) => problem.path).sort()).toEqual([
      'state.redis.name',
      'state.redis.sentinels[0]',
      'state.redis.sentinels[1].port',
      'state.redis.sentinels[1].tls',
      'state.redis.url',
    ])
  })

  it('validates maxStaleness, forgetMissingAfter and the local state file', () => {
    const config = buildConfig(
      withPools({
        state: {
          store: 'redis',
          maxStaleness: '30s',
          redis: { forgetMissingAfter: '1h', lastStateFile: 'relative/last.json' },
        },
      }),
      {},
    )
    expect(config.state.maxStaleness).toBe(30_000)
    expect(config.state.redis).toMatchObject({
      forgetMissingAfter: 3_600_000,
      lastStateFile: resolve(process.cwd(), 'relative/last.json'),
    })
    const off = buildConfig(withPools({ state: { store: 'redis', redis: { lastStateFile: false } } }), {})
    expect(off.state.redis?.lastStateFile).toBeNull()

    const problems = problemsOf(
      withPools({
        state: {
          maxStalenes: '5s',
          redis: { heartbeatInterval: '5s', forgetMissingAfter: '15s', lastStateFile: true },
        },
      }),
    )
    expect(problems).toEqual([
      { path: 'state.maxStalenes', message: expect.stringContaining('did you mean "maxStaleness"') },
      { path: 'state.redis.lastStateFile', message: expect.stringContaining('or false') },
      {
        path: 'state.redis.forgetMissingAfter',
        message: 'must be longer than three heartbeatIntervals (15000ms)',
      },
    ])
    expect(problemsOf(withPools({ state: { maxStaleness: '-1s' } }))).toEqual([
      { path: 'state.maxStaleness', message: expect.stringMatching(/^expected a duration/) },
    ])
  })

  it('validates trusted proxies and admin settings', () => {
    const config = buildConfig(
      withPools({
        admin: { listen: '[::1]:9999', token: 's3cret' },
        proxy: { trustedProxies: ['10.0.0.0/8', '192.168.1.1', 'fd00::/8', '::1'] },
      }),
      {},
    )
    expect(config.admin).toEqual({
      listen: { host: '::1', port: 9999 },
      tokens: [{ name: 'admin', token: 's3cret' }],
      allowedHosts: ['localhost', '127.0.0.1', '::1'],
      allowedOrigins: [],
      waitTimeout: 5000,
      auditKeep: 1000,
    })
    expect(config.proxy.trustedProxies).toEqual(['10.0.0.0/8', '192.168.1.1', 'fd00::/8', '::1'])
    expect(buildConfig(withPools({ admin: { token: '' } }), {}).admin.tokens[0]?.token ?? null).toBeNull()

    const problems = problemsOf(
      withPools({
        admin: { token: 1234 },
        proxy: { trustedProxies: ['10.0.0.0/33', 'fd00::/129', 'example.com', '1.2.3.4/8/1'] },
      }),
    )
    expect(messageAt(problems, 'admin.token')).toContain('a string')
    expect(problems.filter((problem) => problem.path.startsWith('proxy.trustedProxies['))).toHaveLength(4)
  })

  it('rejects the admin API and the proxy on the same address', () => {
    expect(messageAt(problemsOf(withPools({ listen: ':9090' })), 'admin.listen')).toContain(
      'conflicts with listen',
    )
    expect(
      problemsOf(withPools({ listen: '127.0.0.1:8080', admin: { listen: '127.0.0.1:8080' } })),
    ).toHaveLength(1)
    expect(() => buildConfig(withPools({ listen: 0, admin: { listen: '127.0.0.1:0' } }), {})).not.toThrow()
    expect(() =>
      buildConfig(
        withPools({ listen: '10.0.0.1:80', admin: { listen: '10.0.0.2:80', token: 'a-long-enough-token' } }),
        {},
      ),
    ).not.toThrow()
  })

  it('refuses an admin API off loopback without a token', () => {
    expect(messageAt(problemsOf(withPools({ admin: { listen: '0.0.0.0:9090' } })), 'admin.token')).toContain(
      'required when admin.listen is not a loopback address',
    )
    expect(() => buildConfig(withPools({ admin: { listen: '[::1]:9090' } }), {})).not.toThrow()
    const config = buildConfig(
      withPools({ admin: { listen: '0.0.0.0:9090', tokens: { ci: 'x'.repeat(16) } } }),
      {},
    )
    expect(config.admin.tokens).toEqual([{ name: 'ci', token: 'x'.repeat(16) }])
    // A wildcard listener answers to any Host unless told otherwise; the token is what protects it.
    expect(config.admin.allowedHosts).toBeNull()
  })

  it('checks named tokens, allowed hosts and origins', () => {
    const problems = problemsOf(
      withPools({
        admin: {
          token: 'the-same-token-twice',
          tokens: {
            ci: 'short',
            'bad name': 'x'.repeat(16),
            ops: 'the-same-token-twice',
            admin: 'y'.repeat(16),
          },
          allowedHosts: ['ok.example', 'with.port:9090'],
          allowedOrigins: ['https://ops.example.com', 'https://ops.example.com/path'],
        },
      }),
    )
    expect(messageAt(problems, 'admin.tokens.ci')).toContain('at least 16 characters')
    expect(messageAt(problems, 'admin.tokens["bad name"]')).toContain('token name')
    expect(messageAt(problems, 'admin.tokens.ops')).toContain('the same token as "admin"')
    expect(messageAt(problems, 'admin.tokens.admin')).toContain('names admin.token')
    expect(messageAt(problems, 'admin.allowedHosts[1]')).toContain('without a port')
    expect(messageAt(problems, 'admin.allowedOrigins[1]')).toContain('scheme, host and port only')
  })

  it('validates the health check of a pool', () => {
    const problems = problemsOf({
      pools: {
        blue: { upstreams: ['http://127.0.0.1:1'], healthCheck: { path: 'healthz', timeout: 0, every: 1 } },
        green: {},
      },
    })
    expect(messageAt(problems, 'pools.blue.healthCheck.path')).toContain('starting with "/"')
    expect(messageAt(problems, 'pools.blue.healthCheck.timeout')).toContain('duration')
    expect(messageAt(problems, 'pools.blue.healthCheck.every')).toContain('unknown key')
  })

  it('reads rollback.unavailableFor (0 = off) and rollout.onLowTraffic, and says what is wrong with them', () => {
    const config = buildConfig(
      withPools({ rollback: { unavailableFor: 0 }, rollout: { onLowTraffic: 'proceed' } }),
      {},
    )
    expect(config.rollback.unavailableFor).toBe(0)
    expect(config.rollout).toEqual({ onLowTraffic: 'proceed' })
    const problems = problemsOf(
      withPools({ rollback: { unavailableFor: '-1s' }, rollout: { onLowTraffic: 'hodl' } }),
    )
    expect(messageAt(problems, 'rollback.unavailableFor')).toContain('duration')
    expect(messageAt(problems, 'rollout.onLowTraffic')).toBe(
      'expected one of: hold, proceed, got "hodl"; did you mean "hold"?',
    )
  })

  it('reads retries, with methods in upper case', () => {
    const config = buildConfig(
      withPools({
        proxy: {
          retries: {
            max: '2',
            methods: ['get', 'PROPFIND'],
            on: ['reset', 'header_timeout'],
            budget: { percent: 10 },
          },
        },
      }),
      {},
    )
    expect(config.proxy.retries).toEqual({
      max: 2,
      methods: ['GET', 'PROPFIND'],
      on: ['reset', 'header_timeout'],
      budget: { percent: 10, minPerSecond: 3 },
    })
    expect(
      buildConfig(withPools({ proxy: { retries: { max: 0, on: [] } } }), {}).proxy.retries,
    ).toMatchObject({
      max: 0,
      on: [],
    })
  })

  it('reports every problem with retries', () => {
    const problems = problemsOf(
      withPools({
        proxy: {
          retries: {
            max: -1,
            methods: ['GTE', 'post', 3],
            on: ['reset', 'timeout'],
            budget: { percent: 120, minPerSeconds: 3 },
          },
        },
      }),
    )
    expect(messageAt(problems, 'proxy.retries.max')).toBe('expected an integer from 0 to 10, got -1')
    expect(messageAt(problems, 'proxy.retries.methods[0]')).toContain('did you mean "GET"?')
    expect(messageAt(problems, 'proxy.retries.methods[1]')).toBe(
      'POST is not idempotent: a request that reached an upstream is never sent again',
    )
    expect(messageAt(problems, 'proxy.retries.methods[2]')).toContain('got 3')
    expect(messageAt(problems, 'proxy.retries.on[1]')).toContain('expected one of: reset, header_timeout')
    expect(messageAt(problems, 'proxy.retries.budget.percent')).toContain('from 0 to 100')
    expect(messageAt(problems, 'proxy.retries.budget.minPerSeconds')).toContain(
      'did you mean "minPerSecond"?',
    )
    expect(problemsOf(withPools({ proxy: { retries: { methods: 'GET' } } }))).toEqual([
      { path: 'proxy.retries.methods', message: 'expected a list of HTTP methods such as "GET", got "GET"' },
    ])
  })
})

describe('${VAR} substitution', () => {
  const raw = (token: string) => withPools({ admin: { token } })

  it('replaces variables and defaults in string values', () => {
    const config = buildConfig(
      {
        ...raw('${TOKEN}'),
        listen: '${HOST:-127.0.0.1}:${PORT}',
        pools: { blue: { upstreams: ['http://${BLUE_HOST}:80'] }, green: { upstreams: [] } },
      },
      { TOKEN: 'abc', PORT: '8081', BLUE_HOST: 'blue.internal' },
    )
    expect(config.admin.tokens[0]?.token ?? null).toBe('abc')
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 8081 })
    expect(config.pools.blue.upstreams[0]?.url).toBe('http://blue.internal:80')
  })

  it('uses the default for an empty variable, and keeps an empty value without one', () => {
    expect(buildConfig(raw('${TOKEN:-fallback}'), { TOKEN: '' }).admin.tokens[0]?.token ?? null).toBe(
      'fallback',
    )
    expect(buildConfig(raw('${TOKEN}'), { TOKEN: '' }).admin.tokens[0]?.token ?? null).toBeNull()
  })

  it('reads "$${" as a literal "${"', () => {
    expect(buildConfig(raw('a$${TOKEN}b'), { TOKEN: 'x' }).admin.tokens[0]?.token ?? null).toBe('a${TOKEN}b')
  })

  it('reports an unset variable at its key path', () => {
    const problems = problemsOf(raw('${BLUEGREEN_ADMIN_TOKEN}'))
    expect(problems).toEqual([
      { path: 'admin.token', message: expect.stringContaining('BLUEGREEN_ADMIN_TOKEN is not set') },
    ])
    expect(messageAt(problemsOf(raw('${not valid}')), 'admin.token')).toContain('malformed')
  })

  it('accepts numbers and booleans from variables', () => {
    const config = buildConfig(
      withPools({
        log: { access: '${ACCESS}' },
        pools: {
          blue: { upstreams: [], maxConnectionsPerUpstream: '${MAX}' },
          green: { upstreams: ['http://g:1'] },
        },
      }),
      { ACCESS: 'true', MAX: '64' },
    )
    expect(config.log.access).toBe(true)
    expect(config.pools.blue.maxConnectionsPerUpstream).toBe(64)
  })
})

describe('parseDuration', () => {
  it.each([
    [0, 0],
    [5000, 5000],
    ['250', 250],
    ['250ms', 250],
    ['5s', 5000],
    ['1.5s', 1500],
    ['2m', 120_000],
    ['1h', 3_600_000],
  ])('%j -> %j', (input, expected) => {
    expect(parseDuration(input)).toBe(expected)
  })

  it.each([-1, 1.5, '-5s', '5 s', '5sec', 's', '', null, true, {}, Number.POSITIVE_INFINITY])(
    'rejects %j',
    (input) => {
      expect(parseDuration(input)).toBeUndefined()
    },
  )
})

describe('parseListen', () => {
  it.each([
    ['0.0.0.0:8080', { host: '0.0.0.0', port: 8080 }],
    ['localhost:80', { host: 'localhost', port: 80 }],
    [':9090', { host: '0.0.0.0', port: 9090 }],
    ['[::1]:9090', { host: '::1', port: 9090 }],
    ['[::]:0', { host: '::', port: 0 }],
    [8080, { host: '0.0.0.0', port: 8080 }],
    ['8080', { host: '0.0.0.0', port: 8080 }],
  ])('%j', (input, expected) => {
    expect(parseListen(input)).toEqual(expected)
  })

  it.each(['::1:8080', '[nope]:80', 'host:65536', 'host:', 'host', 'a b:80', -1, 70_000, 80.5, null])(
    'rejects %j',
    (input) => {
      expect(parseListen(input)).toBeUndefined()
    },
  )
})

describe('loadConfig', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bluegreen-config-'))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  async function file(name: string, content: string): Promise<string> {
    const path = join(dir, name)
    await writeFile(path, content)
    return path
  }

  const contractExample = `listen: "0.0.0.0:8080"            # public proxy listener
admin:
  listen: "127.0.0.1:9090"        # admin API, /metrics, /healthz, /readyz
  token: "\${BLUEGREEN_ADMIN_TOKEN}"   # \${VAR} is read from the environment
pools:
  blue:  { upstreams: ["http://10.0.0.11:8080", "http://10.0.0.12:8080"] }
  green: { upstreams: ["http://10.0.1.11:8080"] }
state:
  store: file                     # file (default, embedded) | redis
  path: ./bluegreen-state.json    # file store
  redis: { url: "redis://127.0.0.1:6379", key: "bluegreen:default" }   # Sentinel: sentinels + name
  initial: blue                   # used only when no state exists yet
`

  it("resolves relative file paths against the config file's directory; absolute ones stay", async () => {
    const config = await loadConfig(
      await file(
        'relative.yaml',
        [
          'pools: { blue: { upstreams: ["http://10.0.0.1:80"] }, green: { upstreams: ["http://10.0.0.2:80"] } }',
          'state:',
          '  path: state/bluegreen.json',
          '  redis: { url: "rediss://cache:6380", tlsCaFile: ../ca.pem, lastStateFile: ./last.json }',
          '',
        ].join('\n'),
      ),
      {},
    )
    expect(config.state.path).toBe(join(dir, 'state', 'bluegreen.json'))
    expect(config.state.redis?.tlsCaFile).toBe(resolve(dir, '..', 'ca.pem'))
    expect(config.state.redis?.lastStateFile).toBe(join(dir, 'last.json'))
    const absolute = await loadConfig(
      await file(
        'absolute.json',
        JSON.stringify({ ...minimal, state: { path: '/var/lib/bluegreen/s.json' } }),
      ),
      {},
    )
    expect(absolute.state.path).toBe('/var/lib/bluegreen/s.json')
  })

  it("accepts the CONTRACT's example config", async () => {
    const config = await loadConfig(await file('contract.yaml', contractExample), {
      BLUEGREEN_ADMIN_TOKEN: 't0k',
    })
    expect(config.admin.tokens[0]?.token ?? null).toBe('t0k')
    expect(config.pools.blue.upstreams.map((upstream) => upstream.origin)).toEqual([
      'http://10.0.0.11:8080',
      'http://10.0.0.12:8080',
    ])
    expect(config.state.redis).toEqual({
      url: 'redis://127.0.0.1:6379',
      key: 'bluegreen:default',
      commandTimeout: 1000,
      connectTimeout: 2000,
      pollInterval: 5000,
      heartbeatInterval: 1000,
      forgetMissingAfter: 600_000,
      lastStateFile: '/var/lib/bluegreen/last-state.json',
    })
    await expect(loadConfig(await file('contract2.yml', contractExample), {})).rejects.toMatchObject({
      code: 'BG_CONFIG_INVALID',
      problems: [{ path: 'admin.token', message: expect.stringContaining('BLUEGREEN_ADMIN_TOKEN') }],
    })
  })

  it('reads JSON by extension', async () => {
    const config = await loadConfig(
      await file('config.json', JSON.stringify({ ...minimal, listen: 1234 })),
      {},
    )
    expect(config.listen.port).toBe(1234)
  })

  it('reports unreadable files and syntax errors with the file and line', async () => {
    const missing = join(dir, 'missing.yaml')
    await expect(loadConfig(missing, {})).rejects.toMatchObject({
      code: 'BG_CONFIG_UNREADABLE',
      status: 400,
      message: expect.stringContaining(missing),
    })
    const yaml = await file('broken.yaml', 'pools:\n  blue: [1,\n    a: b: c\n')
    const yamlError = await loadConfig(yaml, {}).catch((error: unknown) => error)
    expect(yamlError).toBeInstanceOf(BlueGreenError)
    expect(yamlError).toMatchObject({
      code: 'BG_CONFIG_UNREADABLE',
      message: expect.stringContaining(`${yaml}:3:`),
    })
    const json = await file('broken.json', '{\n  "pools": {\n    "blue" []\n  }\n}')
    await expect(loadConfig(json, {})).rejects.toMatchObject({
      code: 'BG_CONFIG_UNREADABLE',
      message: expect.stringContaining(`${json}:3:`),
    })
    const token = await file('token.json', '{\n  "pools": }')
    await expect(loadConfig(token, {})).rejects.toMatchObject({
      message: expect.stringContaining(`${token}:2:`),
    })
  })

  it('rejects duplicate keys in YAML', async () => {
    const path = await file('dup.yaml', 'listen: ":1"\nlisten: ":2"\n')
    await expect(loadConfig(path, {})).rejects.toMatchObject({ code: 'BG_CONFIG_UNREADABLE' })
  })

  it('treats an empty file as a config without pools', async () => {
    await expect(loadConfig(await file('empty.yaml', ''), {})).rejects.toMatchObject({
      code: 'BG_CONFIG_INVALID',
      problems: [{ path: 'pools', message: expect.stringMatching(/^required/) }],
    })
  })
})
