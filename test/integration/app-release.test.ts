import { createHook } from 'node:async_hooks'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startApp } from '../../src/app.ts'
import { buildConfig } from '../../src/config/schema.ts'
import { silentLogger } from '../../src/log.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import { echoUpstream, startServer, type TestServer, tempDir } from '../helpers/servers.ts'

// What the app starts, it releases: after close(), and after a start-up that fails half way (the proxy listening
// and the admin port taken, say), no timer, socket, listener or file watcher it made is left behind. A leak here
// is invisible to a process that exits on the failure, but not to an embedder, to the tests, or to a config
// reload that starts a new set of parts beside the old one.

/** Node's handles that keep a process busy; unref'd timers count too, since a leaked one still runs. */
const HANDLES = new Set([
  'Timeout',
  'Immediate',
  'TCPSERVERWRAP',
  'TCPWRAP',
  'PIPEWRAP',
  'FSEVENTWRAP',
  'STATWATCHER',
])

/** Runs `run`, then waits until every handle created meanwhile is gone, and fails naming those that stay. */
async function expectNothingLeftBy(run: () => Promise<unknown>): Promise<void> {
  const alive = new Map<number, string>()
  let recording = true
  const hook = createHook({
    init(id, type) {
      if (!recording || !HANDLES.has(type)) return
      alive.set(id, `${type}\n${new Error().stack?.split('\n').slice(3, 9).join('\n')}`)
    },
    destroy(id) {
      alive.delete(id)
    },
  }).enable()
  try {
    await run()
    recording = false
    await eventually(() => alive.size === 0).catch(() => {
      throw new Error(`left behind:\n${[...alive.values()].join('\n')}`)
    })
  } finally {
    hook.disable()
  }
}

describe('start-up and shutdown release what they started', () => {
  let blue: TestServer
  let green: TestServer
  let taken: TestServer
  let redis: RedisProcess

  beforeAll(async () => {
    ;[blue, green, taken, redis] = await Promise.all([
      echoUpstream('blue'),
      echoUpstream('green'),
      startServer((_req, res) => res.end()),
      startRedis(),
    ])
  })

  afterAll(async () => {
    await Promise.all([blue?.close(), green?.close(), taken?.close(), redis?.stop()])
  })

  async function configWith(extra: Record<string, unknown> = {}) {
    const dir = await tempDir()
    return buildConfig(
      {
        listen: '127.0.0.1:0',
        admin: { listen: '127.0.0.1:0' },
        pools: {
          blue: { upstreams: [blue.url] },
          green: { upstreams: [green.url] },
        },
        state: { path: join(dir.path, 'state.json') },
        shutdown: { grace: '1s' },
        ...extra,
      },
      {},
    )
  }

  const redisState = (dir: string) => ({
    store: 'redis',
    redis: {
      url: redis.url,
      key: `bluegreen:release-${Date.now()}`,
      lastStateFile: join(dir, 'last-state.json'),
    },
  })

  it('closes everything it started on close()', async () => {
    const config = await configWith()
    await expectNothingLeftBy(async () => {
      const app = await startApp(config, silentLogger())
      expect((await fetch(`http://127.0.0.1:${app.proxyAddress.port}/`)).status).toBe(200)
      await app.close()
    })
  })

  it('releases everything when the admin port is taken, after the proxy listens', async () => {
    const config = await configWith({ admin: { listen: `127.0.0.1:${taken.port}` } })
    await expectNothingLeftBy(() =>
      expect(startApp(config, silentLogger())).rejects.toMatchObject({ code: 'EADDRINUSE' }),
    )
  })

  it('releases everything, Redis connections included, when the proxy port is taken', async () => {
    const dir = await tempDir()
    const config = await configWith({ listen: `127.0.0.1:${taken.port}`, state: redisState(dir.path) })
    await expectNothingLeftBy(() =>
      expect(startApp(config, silentLogger())).rejects.toMatchObject({ code: 'EADDRINUSE' }),
    )
    await dir.remove()
  })

  it('releases everything when the state file cannot be loaded', async () => {
    const config = await configWith()
    await writeFile(config.state.path, '{"state": ')
    await expectNothingLeftBy(() =>
      expect(startApp(config, silentLogger())).rejects.toThrow(/not valid JSON/),
    )
  })
})
