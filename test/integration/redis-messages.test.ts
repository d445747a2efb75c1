// What an operator reads while Redis is down: one plain line naming the Redis and the reason, in the log once per
// outage and once when it is back, and the same words from the admin API and the CLI; never ioredis's internals.

import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { adminPost } from '../helpers/admin.ts'
import { killRunningClis, runCli } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import {
  type ChildProxy,
  echoUpstream,
  freePort,
  spawnProxy,
  startServer,
  type TestServer,
  tempDir,
  writeConfig,
} from '../helpers/servers.ts'

interface LogLine {
  level: number
  msg: string
}

function logLines(output: string): LogLine[] {
  return output
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as LogLine)
}

/** Warnings and errors whose message matches. */
function loud(output: string, pattern: RegExp): LogLine[] {
  return logLines(output).filter((line) => line.level >= 40 && pattern.test(line.msg))
}

/** Debug lines whose message matches. */
function quiet(output: string, pattern: RegExp): LogLine[] {
  return logLines(output).filter((line) => line.level === 20 && pattern.test(line.msg))
}

describe('messages while Redis is down', () => {
  let blue: TestServer
  let green: TestServer
  let redis: RedisProcess | undefined
  let proxy: ChildProxy | undefined
  let dir: Awaited<ReturnType<typeof tempDir>>

  afterEach(async () => {
    await proxy?.stop('SIGKILL')
    await redis?.stop()
    proxy = undefined
    redis = undefined
  })
  afterAll(async () => {
    killRunningClis()
    await blue?.close()
    await green?.close()
    await dir?.remove()
  })

  async function start(port: number): Promise<ChildProxy> {
    blue ??= await echoUpstream('blue')
    green ??= await echoUpstream('green')
    dir ??= await tempDir('bluegreen-redis-messages-')
    const file = await writeConfig(
      dir.path,
      {
        listen: '127.0.0.1:0',
        admin: { listen: '127.0.0.1:0' },
        pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
        state: {
          store: 'redis',
          redis: {
            url: `redis://127.0.0.1:${port}`,
            key: `bluegreen:messages-${port}`,
            connectTimeout: 300,
            commandTimeout: 300,
            heartbeatInterval: 200,
            pollInterval: 300,
            lastStateFile: false,
          },
        },
        rollback: { evaluateEvery: '100ms' },
        log: { level: 'debug' },
      },
      `config-${port}.json`,
    )
    proxy = await spawnProxy(file)
    return proxy
  }

  it('says "Redis at HOST:PORT is unreachable (ECONNREFUSED)" in the CLI, the admin API and once in the log', async () => {
    const port = await freePort()
    const child = await start(port)
    const unreachable = `Redis at 127.0.0.1:${port} is unreachable (ECONNREFUSED)`
    await eventually(() => child.output().includes(unreachable), { message: 'the outage to be logged' })

    for (const command of ['replicas', 'events']) {
      const result = await runCli([command, '--admin', child.admin])
      expect(result.code, command).toBe(1)
      expect(result.stderr, command).toMatch(/^bluegreen: [^\n]+\(BG_STATE_UNAVAILABLE\)\n$/)
      expect(result.stderr, command).toContain(unreachable)
      expect(result.stderr).not.toMatch(/Stream isn't writeable|enableOfflineQueue/)
    }
    const replicas = await fetch(`${child.admin}/replicas`)
    expect(replicas.status).toBe(503)
    const { error } = (await replicas.json()) as { error: { code: string; message: string } }
    expect(error.code).toBe('BG_STATE_UNAVAILABLE')
    expect(error.message).toContain(unreachable)

    // The loader tries again every second: let it fail a few more times (said at debug level) before Redis is back.
    await eventually(() => quiet(child.output(), /no routing state/).length >= 3, {
      timeout: 10_000,
      message: 'the loader to try again three times',
    })
    redis = await startRedis({ port })
    await eventually(() => /Redis at 127\.0\.0\.1:\d+ is reachable again/.test(child.output()), {
      timeout: 10_000,
      message: 'the return to be logged',
    })
    const output = child.output()
    // Once per outage: the store says why, the loader says what it means; neither repeats every retry.
    expect(loud(output, /unreachable/), JSON.stringify(loud(output, /./))).toHaveLength(1)
    expect(loud(output, /no routing state/), JSON.stringify(loud(output, /./))).toHaveLength(1)
    expect(output).not.toMatch(/not connected within \d+ ms: not connected/)
    expect(output).not.toMatch(/Stream isn't writeable/)
  })

  it('a replica whose admin port is taken exits 1 without writing its local copy of the state', async () => {
    const port = await freePort()
    redis = await startRedis({ port })
    blue ??= await echoUpstream('blue')
    green ??= await echoUpstream('green')
    dir ??= await tempDir('bluegreen-redis-messages-')
    const taken = await startServer((_req, res) => res.end())
    try {
      const copy = join(dir.path, `last-state-${port}.json`)
      const file = await writeConfig(
        dir.path,
        {
          listen: '127.0.0.1:0',
          admin: { listen: `127.0.0.1:${taken.port}` },
          pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
          state: {
            store: 'redis',
            redis: { url: redis.url, key: `bluegreen:taken-${port}`, lastStateFile: copy },
          },
        },
        `taken-${port}.json`,
      )
      const result = await runCli(['serve', '--config', file])
      expect(result.code).toBe(1)
      expect(result.stderr).toContain(`the admin listener cannot listen on 127.0.0.1:${taken.port}`)
      expect(existsSync(copy)).toBe(false)
    } finally {
      await taken.close()
    }
  })

  it('logs a Redis outage during a watched change once, not a warning with a stack every evaluation', async () => {
    const port = await freePort()
    redis = await startRedis({ port })
    const child = await start(port)
    await eventually(async () => (await fetch(`${child.admin}/readyz`)).status === 200, {
      message: 'the proxy to load the state',
    })
    const switched = await adminPost(child.admin, '/switch', { to: 'green', reason: 'watched' })
    expect(switched.status).toBe(200)
    await redis.kill()
    // The reason depends on what noticed first: a command on the lost connection, or the refused reconnect.
    await eventually(() => child.output().includes(`Redis at 127.0.0.1:${port} is unreachable (`), {
      message: 'the outage to be logged',
    })
    // The guard evaluates every 100 ms: wait for a good number of evaluations to have failed (said at debug level).
    await eventually(() => quiet(child.output(), /release guard could not evaluate/).length >= 5, {
      timeout: 10_000,
      message: 'the guard to fail five evaluations',
    })
    await redis.restart()
    await eventually(
      () =>
        /is reachable again/.test(child.output()) && /release guard evaluating again/.test(child.output()),
      { timeout: 10_000, message: 'the return to be logged' },
    )
    const output = child.output()
    const warnings = JSON.stringify(loud(output, /./))
    expect(loud(output, /release guard could not evaluate/), warnings).toHaveLength(1)
    expect(loud(output, /is unreachable/), warnings).toHaveLength(1)
    expect(loud(output, /release guard evaluating again/), warnings).toHaveLength(0)
    expect(logLines(output).filter((line) => line.msg === 'release guard evaluating again')).toHaveLength(1)
    // Nothing came from a local copy: there is none (lastStateFile: false).
    expect(output).not.toContain('from its local copy')
    expect(warnings).not.toMatch(/"stack"/)
  })
})
