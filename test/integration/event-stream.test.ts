import { type IncomingMessage, request } from 'node:http'
import { createConnection } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EventStream } from '../../src/admin/event-stream.ts'
import type { BlueGreenError } from '../../src/errors.ts'
import { adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { collectFrames, type LiveFrame } from '../helpers/live-events.ts'
import { startProxy, startServer, type TestProxy, type TestServer } from '../helpers/servers.ts'

// GET /events/stream read as curl -N reads it: a raw HTTP client on a real socket, the frames parsed as they come.

interface Reader {
  response: IncomingMessage
  frames: LiveFrame[]
  text: () => string
  ended: Promise<void>
  close(): void
}

function openStream(admin: string, lastEventId?: string): Promise<Reader> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { accept: 'text/event-stream' }
    if (lastEventId !== undefined) headers['last-event-id'] = lastEventId
    const req = request(`${admin}/events/stream`, { headers }, (response) => {
      const { frames, text } = collectFrames(response)
      const ended = new Promise<void>((done) => response.once('end', done))
      resolve({ response, frames, text, ended, close: () => req.destroy() })
    })
    req.on('error', reject)
    req.end()
  })
}

function find(reader: Reader, match: (frame: LiveFrame) => boolean, message: string): Promise<LiveFrame> {
  return eventually(() => reader.frames.find(match), { message })
}

describe('GET /events/stream', () => {
  let blue: TestServer
  let green: TestServer
  let proxy: TestProxy

  beforeAll(async () => {
    blue = await startServer((_req, res) => res.end('blue'))
    // Healthy to its probe, failing every request: a switch to it is rolled back by the guard.
    green = await startServer((req, res) => {
      res.writeHead(req.url === '/health' ? 200 : 500)
      res.end('green')
    })
    proxy = await startProxy(
      { blue: [blue.url], green: [green.url] },
      {
        pools: {
          blue: { upstreams: [blue.url], healthCheck: { path: '/health' } },
          green: { upstreams: [green.url], healthCheck: { path: '/health' } },
        },
        rollback: {
          window: '5s',
          evaluateEvery: '100ms',
          minRequests: 20,
          maxErrorRatio: 0.05,
          maxP99: '300ms',
          watch: '30s',
        },
      },
    )
  })

  afterAll(async () => {
    await proxy?.close()
    await Promise.all([blue?.close(), green?.close()])
  })

  it('sends a switch and the automatic rollback, each with an id; Last-Event-ID resumes; close ends it', async () => {
    const stream = await openStream(proxy.admin)
    expect(stream.response.statusCode).toBe(200)
    expect(stream.response.headers['content-type']).toMatch(/^text\/event-stream/)

    expect((await adminPost(proxy.admin, '/switch', { to: 'green', reason: 'release 42' })).status).toBe(200)
    const switched = await find(
      stream,
      (frame) => frame.event === 'state' && (frame.data as { trigger: string }).trigger === 'admin',
      'the switch',
    )
    expect(switched.data).toMatchObject({
      generation: 1,
      from: { active: 'blue', generation: 0 },
      to: { active: 'green', weights: { blue: 0, green: 100 } },
      reason: 'release 42',
    })
    await find(
      stream,
      (frame) => frame.event === 'audit' && (frame.data as { action: string }).action === 'switch',
      'the switch audited',
    )
    // Blue lost its traffic with nothing open on it: its drain starts and is complete at once.
    const drained = await find(
      stream,
      (frame) => frame.event === 'drain' && (frame.data as { phase: string }).phase === 'complete',
      'blue drained',
    )
    expect(drained.data).toEqual({ phase: 'complete', color: 'blue', requests: 0, websockets: 0 })
    expect(stream.frames.find((frame) => frame.event === 'drain')!.data).toMatchObject({
      phase: 'started',
      color: 'blue',
    })

    for (let i = 0; i < 30; i++) await (await fetch(`${proxy.url}/work/${i}`)).arrayBuffer()
    const rolledBack = await find(
      stream,
      (frame) => frame.event === 'state' && (frame.data as { trigger: string }).trigger === 'rollback',
      'the automatic rollback',
    )
    expect(rolledBack.data).toMatchObject({
      generation: 2,
      from: { active: 'green' },
      to: { active: 'blue' },
    })
    expect(String((rolledBack.data as { reason: string }).reason)).toMatch(/green error ratio 100\.0%/)
    const audited = await find(
      stream,
      (frame) => frame.event === 'audit' && (frame.data as { action: string }).action === 'rollback',
      'the rollback audited',
    )
    expect(audited.data).toMatchObject({ actor: 'bluegreen', result: 'accepted', generation: 2 })

    // Ids are this process's tag and a count that goes up by one per event.
    const ids = stream.frames.map((frame) => /^([0-9a-f]{8})-(\d+)$/.exec(frame.id ?? '')!)
    expect(new Set(ids.map((match) => match[1]))).toHaveLength(1)
    const counts = ids.map((match) => Number(match[2]))
    expect(counts).toEqual(counts.map((_, index) => counts[0]! + index))

    // A client that saw only the switch gets the rest again, in order, and nothing twice.
    const resumed = await openStream(proxy.admin, switched.id)
    const after = stream.frames.slice(stream.frames.indexOf(switched) + 1)
    await eventually(() => resumed.frames.length >= after.length, { message: 'the missed events replayed' })
    expect(resumed.frames.slice(0, after.length)).toEqual(after)

    // An id another process gave (the proxy restarted since): told to resync, not left with a silent gap.
    const stale = await openStream(proxy.admin, '0badc0de-3')
    const resync = await find(stale, (frame) => frame.event === 'resync', 'the resync')
    expect(resync).toMatchObject({ id: stream.frames.at(-1)!.id, data: { lastEventId: '0badc0de-3' } })

    // A client that goes away is no longer counted; the others are.
    const streams = async () =>
      ((await (await fetch(`${proxy.admin}/state`)).json()) as { replica: { eventStreams: number } }).replica
        .eventStreams
    expect(await streams()).toBe(3)
    stale.close()
    await eventually(async () => (await streams()) === 2, { message: 'the closed stream cleaned up' })

    // Shutdown ends the open streams instead of leaving clients hanging.
    await proxy.close()
    await Promise.all([stream.ended, resumed.ended])
  })
})

describe('GET /events/stream, bounded', () => {
  it('serves at most maxStreams at once (503 beyond), and drops a client that stops reading', async () => {
    const events = new EventStream({ maxStreams: 3, maxBufferedBytes: 256 * 1024 })
    /** Client ports whose stream the server side has closed. */
    const closedPorts = new Set<number>()
    const server = await startServer((req, res) => {
      const port = req.socket.remotePort ?? 0
      res.once('close', () => closedPorts.add(port))
      try {
        events.serve(req, res)
      } catch (error) {
        const refused = error as BlueGreenError
        res
          .writeHead(refused.status, { 'content-type': 'application/json' })
          .end(JSON.stringify(refused.toJSON()))
      }
    })
    try {
      const readers = [await openStream(server.url), await openStream(server.url)]
      // A client that reads nothing: its socket's buffers fill, then the stream's own.
      const stalled = createConnection({ host: '127.0.0.1', port: server.port })
      stalled.write('GET /events/stream HTTP/1.1\r\nhost: x\r\n\r\n')
      stalled.pause()
      await eventually(() => events.clients === 3, { message: 'three streams open' })
      const refused = await openStream(server.url)
      expect(refused.response.statusCode).toBe(503)
      expect(refused.text()).toContain('BG_TOO_MANY_STREAMS')
      const closed = () => closedPorts.has(stalled.localPort ?? -1)
      const big = 'x'.repeat(64 * 1024)
      for (let i = 0; i < 1000 && !closed(); i++) {
        events.publish('filler', { big })
        await new Promise((resolve) => setImmediate(resolve))
      }
      // Dropped by the proxy: the stalled client did nothing but stop reading.
      await eventually(closed, { message: 'the stalled stream dropped' })
      stalled.destroy()
      expect(events.clients).toBeLessThan(3)
      const again = await openStream(server.url)
      expect(again.response.statusCode).toBe(200)
      for (const reader of [...readers, again]) reader.close()
    } finally {
      events.endStreams()
      await server.close()
    }
  })
})
