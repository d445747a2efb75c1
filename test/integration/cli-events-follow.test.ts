import type { ChildProcess } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ADMIN_MARK } from '../../src/admin/mark.ts'
import { adminPost } from '../helpers/admin.ts'
import { spawnCollecting } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import {
  CLI,
  echoUpstream,
  startProxy,
  startServer,
  type TestProxy,
  type TestServer,
} from '../helpers/servers.ts'

// `bluegreen events --follow` as a child process: woken by GET /events/stream, and polling a proxy without it.

const children = new Set<ChildProcess>()

function follow(admin: string, interval: string): () => string {
  const { child, output } = spawnCollecting(
    process.execPath,
    [CLI, 'events', '--follow', '--interval', interval, '--admin', admin],
    { env: { ...process.env, BLUEGREEN_ADMIN: undefined, BLUEGREEN_ADMIN_TOKEN: undefined } },
  )
  children.add(child)
  return output
}

afterAll(() => {
  for (const child of children) child.kill('SIGKILL')
})

describe('bluegreen events --follow', () => {
  const servers: TestServer[] = []
  let proxy: TestProxy

  beforeAll(async () => {
    servers.push(await echoUpstream('blue'), await echoUpstream('green'))
    proxy = await startProxy({ blue: [servers[0]!.url], green: [servers[1]!.url] })
  })

  afterAll(async () => {
    await proxy?.close()
    await Promise.all(servers.map((server) => server.close()))
  })

  it('prints a switch made after it started as it is made, with no poll due for an hour', async () => {
    const output = follow(proxy.admin, '3600')
    await eventually(() => output().includes('no events yet'), { message: 'the first read', timeout: 15_000 })
    expect((await adminPost(proxy.admin, '/switch', { to: 'green', reason: 'live one' })).status).toBe(200)
    await eventually(() => output().includes('live one'), { message: 'the switch printed' })
    expect(output().trimEnd().split('\n').at(-1)).toMatch(/ switch +green 0\/100 +accepted #1 +live one$/)
  })

  it('opens the stream again after an admin API restart, and goes on printing', async () => {
    const pools = { blue: [servers[0]!.url], green: [servers[1]!.url] }
    let restarting = await startProxy(pools)
    const port = restarting.app.adminAddress.port
    const streams = async () =>
      ((await (await fetch(`${restarting.admin}/state`)).json()) as { replica: { eventStreams: number } })
        .replica.eventStreams
    const output = follow(restarting.admin, '0.1')
    try {
      await eventually(() => output().includes('no events yet'), {
        message: 'the first read',
        timeout: 15_000,
      })
      await eventually(async () => (await streams()) === 1, { message: 'the stream open' })
      await restarting.close()
      await eventually(() => output().includes('ECONNREFUSED'), { message: 'the outage said' })
      restarting = await startProxy(pools, { admin: { listen: `127.0.0.1:${port}` } })
      await eventually(() => output().includes('the admin API answers again'), {
        message: 'the return',
      })
      await eventually(async () => (await streams()) === 1, { message: 'the stream open again' })
      expect(
        (await adminPost(restarting.admin, '/switch', { to: 'green', reason: 'after restart' })).status,
      ).toBe(200)
      await eventually(() => output().includes('after restart'), { message: 'the switch printed' })
    } finally {
      await restarting.close()
    }
  })

  it('polls GET /events on a proxy older than the stream (404)', async () => {
    const events = [
      {
        at: '2026-01-01T00:00:00.000Z',
        actor: 'token:ci',
        action: 'switch',
        to: null,
        result: 'accepted',
        generation: 1,
        reason: 'old one',
      },
    ]
    // An admin API from before /events/stream: it knows /healthz and /events, and nothing else.
    const older = await startServer((req, res) => {
      res.setHeader(ADMIN_MARK, '1')
      res.setHeader('content-type', 'application/json')
      if (req.url === '/healthz') res.end('{"status":"ok"}')
      else if (req.url?.startsWith('/events?')) res.end(JSON.stringify({ events }))
      else {
        res.writeHead(404)
        res.end('{"error":{"code":"BG_NOT_FOUND","message":"no admin endpoint"}}')
      }
    })
    servers.push(older)
    const output = follow(older.url, '0.1')
    await eventually(() => output().includes('old one'), { message: 'the old event', timeout: 15_000 })
    events.unshift({ ...events[0]!, at: '2026-01-01T00:00:01.000Z', generation: 2, reason: 'polled one' })
    await eventually(() => output().includes('polled one'), { message: 'the new event polled' })
  })
})
