import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { killRunningClis, runCli } from '../helpers/cli.ts'
import { startServer, type TestServer, tempDir, writeConfig } from '../helpers/servers.ts'

// `bluegreen check`: a config validated without starting anything, as nginx -t and caddy validate do.

afterAll(() => {
  killRunningClis()
})

describe('bluegreen check --config FILE', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>
  let taken: TestServer

  beforeAll(async () => {
    dir = await tempDir('bluegreen-check-')
    // Something already listens on the proxy's port: serve would fail there, check does not bind it.
    taken = await startServer((_req, res) => res.end())
  })
  afterAll(async () => {
    await taken?.close()
    await dir?.remove()
  })

  it('a valid config: exit 0 and a one-screen summary, with nothing bound or written', async () => {
    const statePath = join(dir.path, 'state.json')
    const file = await writeConfig(dir.path, {
      listen: `127.0.0.1:${taken.port}`,
      admin: { listen: '127.0.0.1:9999', tokens: { ci: 'ci-token-0123456789abcdef' } },
      pools: {
        blue: { upstreams: ['http://10.0.0.11:8080', 'http://10.0.0.12:8080'] },
        green: { upstreams: ['http://10.0.1.11:8080'], healthCheck: { enabled: false } },
      },
      state: { path: statePath, initial: 'green' },
      rollback: { watch: '2m', maxErrorRatio: 0.1 },
    })
    const [byFlag, byEnv] = await Promise.all([
      runCli(['check', '--config', file]),
      runCli(['check'], { env: { BLUEGREEN_CONFIG: file } }),
    ])
    expect(byFlag.code, byFlag.stderr).toBe(0)
    expect(byFlag.stderr).toBe('')
    expect(byFlag.stdout.split('\n')).toEqual([
      `${file}: the configuration is valid`,
      '',
      `proxy       127.0.0.1:${taken.port}`,
      'admin       127.0.0.1:9999, token(s): ci',
      'blue        http://10.0.0.11:8080, http://10.0.0.12:8080 (round-robin, health check / every 5s)',
      'green       http://10.0.1.11:8080 (round-robin, no active health check)',
      `state       file ${statePath}, initial green`,
      'rollback    watches a change for 120s: errors > 10% or p99 > 2000 ms over 30s (at least 50 requests), or no upstream for 5s',
      'rollout     a step with too little traffic to judge: hold',
      'drain       closed after 30s',
      'shutdown    delay 0s, grace 30s',
      '',
    ])
    expect(byEnv.code, byEnv.stderr).toBe(0)
    expect(byEnv.stdout).toBe(byFlag.stdout)
    expect(existsSync(statePath)).toBe(false)
  })

  it('a Redis store: shown without its password', async () => {
    const file = await writeConfig(
      dir.path,
      {
        pools: { blue: { upstreams: [] }, green: { upstreams: ['http://10.0.1.11:8080'] } },
        state: { store: 'redis', redis: { url: 'redis://:s3cret@10.0.0.5:6379/2', key: 'bluegreen:shop' } },
        rollback: { enabled: false },
        notify: [
          { url: 'https://hooks.slack.com/services/T0/B0/pathsecret', format: 'slack', events: ['rollback'] },
          { name: 'ci', url: 'http://10.0.0.9:8080/hook', secret: 'hmac-key' },
        ],
      },
      'redis.json',
    )
    const result = await runCli(['check', '--config', file])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toContain(
      'state       redis redis://:***@10.0.0.5:6379/2, key bluegreen:shop, initial blue\n',
    )
    expect(result.stdout).not.toContain('s3cret')
    expect(result.stdout).toContain('blue        no upstream\n')
    expect(result.stdout).toContain('rollback    automatic rollback off\n')
    expect(result.stdout).toContain(
      'notify      hooks.slack.com (hooks.slack.com, slack, unsigned: rollback); ci (10.0.0.9:8080, json, signed: every event)\n',
    )
    expect(result.stdout).not.toContain('pathsecret')
    expect(result.stdout).not.toContain('hmac-key')
  })

  it('an invalid config: exit 2 and every problem, exactly as serve prints them', async () => {
    const file = await writeConfig(
      dir.path,
      { listen: 'nowhere', pools: { blue: { upstreams: ['ftp://x'] } }, rollbak: {} },
      'bad.json',
    )
    const [check, serve] = await Promise.all([
      runCli(['check', '--config', file]),
      runCli(['serve', '--config', file]),
    ])
    expect(check.code).toBe(2)
    expect(check.stdout).toBe('')
    expect(check.stderr).toBe(serve.stderr)
    expect(serve.code).toBe(2)
    expect(check.stderr).toMatch(/rollbak.*did you mean "rollback"/)
    expect(check.stderr).toContain('pools.green')
  })

  it('no config: exit 2, saying what it needs', async () => {
    const result = await runCli(['check'])
    expect(result.code).toBe(2)
    expect(result.stderr).toBe('bluegreen: check needs --config FILE (or BLUEGREEN_CONFIG)\n')
  })

  it('a missing file: exit 2 with BG_CONFIG_UNREADABLE as serve says it', async () => {
    const missing = join(dir.path, 'missing.yaml')
    const [check, serve] = await Promise.all([
      runCli(['check', '--config', missing]),
      runCli(['serve', '--config', missing]),
    ])
    expect(check.code).toBe(2)
    expect(check.stderr).toBe(serve.stderr)
  })
})
