import { once } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { DrainStatus } from '../../src/proxy/drain.ts'
import { bucketOf } from '../../src/routing/pick.ts'
import { adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { startProxy, type TestProxy } from '../helpers/servers.ts'
import {
  closeWebSocket,
  openWebSocket,
  roundTrip,
  type WsUpstream,
  wsEchoUpstream,
} from '../helpers/websocket.ts'

/**
 * An upstream for one color. `/hold` is held unanswered and `/hold-body` sends its headers and a first chunk, then
 * holds, until release(); `cutOff` counts held requests whose connection closed first. Anything else answers its
 * name at once. WebSockets are wsEchoUpstream's (`open` counts them).
 */
interface ColorUpstream extends WsUpstream {
  held: ServerResponse[]
  cutOff: number
  release(): void
  reset(): void
}

async function colorUpstream(name: string): Promise<ColorUpstream> {
  const held: ServerResponse[] = []
  const hold = (res: ServerResponse) => {
    held.push(res)
    res.once('close', () => {
      if (!res.writableFinished) upstream.cutOff++
    })
  }
  const base = await wsEchoUpstream(name, {
    onRequest: (req: IncomingMessage, res: ServerResponse) => {
      if (req.url === '/hold') return hold(res)
      if (req.url === '/hold-body') {
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.write('first chunk;')
        return hold(res)
      }
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(name)
    },
  })
  const upstream: ColorUpstream = Object.assign(base, {
    held,
    cutOff: 0,
    release() {
      for (const res of held.splice(0)) if (!res.destroyed) res.end(name)
    },
    reset() {
      upstream.release()
      upstream.cutOff = 0
    },
  })
  return upstream
}

/** A sticky key whose hash bucket sends it green during a 90/10 split (bucket < green's weight). */
function greenKey(): string {
  for (let i = 0; ; i++) if (bucketOf(`user-${i}`) < 10) return `user-${i}`
}

describe('draining the color that lost its traffic', () => {
  let blue: ColorUpstream
  let green: ColorUpstream
  const proxies: TestProxy[] = []
  const sockets: WebSocket[] = []

  async function proxyWith(extra: Record<string, unknown>): Promise<TestProxy> {
    const proxy = await startProxy({ blue: [blue.url], green: [green.url] }, extra)
    proxies.push(proxy)
    return proxy
  }

  async function open(proxy: TestProxy): Promise<WebSocket> {
    const socket = await openWebSocket(`${proxy.url.replace(/^http:/, 'ws:')}/live`)
    sockets.push(socket)
    return socket
  }

  const closed = (socket: WebSocket): Promise<unknown> => once(socket as unknown as EventTarget, 'close')

  async function drainStatus(proxy: TestProxy): Promise<DrainStatus> {
    const response = await fetch(`${proxy.admin}/state`)
    expect(response.status).toBe(200)
    return ((await response.json()) as { replica: { drain: DrainStatus } }).replica.drain
  }

  /** Waits until the drain has completed, and returns the status that says so. */
  function drained(proxy: TestProxy): Promise<DrainStatus> {
    return eventually(
      async () => {
        const status = await drainStatus(proxy)
        return status.draining?.drainedAt ? status : undefined
      },
      { message: 'the drain to complete' },
    )
  }

  async function change(proxy: TestProxy, path: '/switch' | '/weights', body: unknown): Promise<void> {
    const result = await adminPost(proxy.admin, path, body)
    expect(result.status, JSON.stringify(result.body)).toBe(200)
  }

  beforeAll(async () => {
    blue = await colorUpstream('blue')
    green = await colorUpstream('green')
  })
  afterEach(async () => {
    await Promise.all(sockets.splice(0).map((socket) => closeWebSocket(socket)))
    blue.reset()
    green.reset()
    await Promise.all(proxies.splice(0).map((proxy) => proxy.close()))
  })
  afterAll(async () => {
    await blue?.close()
    await green?.close()
  })

  it('keeps a WebSocket on blue open after a switch while drain.timeout is long, and shows blue draining', async () => {
    const proxy = await proxyWith({ drain: { timeout: '1m' } })
    const socket = await open(proxy)
    expect(await roundTrip(socket, 'hi')).toBe('blue:hi')
    expect(await drainStatus(proxy)).toEqual({
      blue: { requests: 0, websockets: 1 },
      green: { requests: 0, websockets: 0 },
      draining: null,
    })

    await change(proxy, '/switch', { to: 'green' })
    const status = await drainStatus(proxy)
    expect(status.blue).toEqual({ requests: 0, websockets: 1 })
    expect(status.draining).toMatchObject({ color: 'blue', drainedAt: null })
    const { since, closesAt } = status.draining!
    expect(Date.parse(closesAt!) - Date.parse(since)).toBe(60_000)
    expect(await roundTrip(socket, 'still there?')).toBe('blue:still there?')
    expect(await fetch(proxy.url).then((response) => response.text())).toBe('green')

    // Its client closes it: nothing is left on blue.
    await closeWebSocket(socket)
    const done = await drained(proxy)
    expect(done.blue).toEqual({ requests: 0, websockets: 0 })
    expect(done.draining).toMatchObject({ color: 'blue', since, closesAt })
  })

  it('closes a WebSocket still open on blue once a short drain.timeout is up, then reports blue drained', async () => {
    const proxy = await proxyWith({ drain: { timeout: '300ms' } })
    const socket = await open(proxy)
    await eventually(() => blue.open === 1, { message: 'the upstream WebSocket to open' })
    const socketClosed = closed(socket)
    const switchedAt = Date.now()
    await change(proxy, '/switch', { to: 'green' })
    expect((await drainStatus(proxy)).blue.websockets).toBe(1)

    await socketClosed
    expect(Date.now() - switchedAt).toBeGreaterThanOrEqual(250)
    await eventually(() => blue.open === 0, { message: 'the upstream WebSocket to close' })
    const done = await drained(proxy)
    expect(done.blue).toEqual({ requests: 0, websockets: 0 })
    expect(Date.parse(done.draining!.drainedAt!)).toBeGreaterThanOrEqual(Date.parse(done.draining!.since))
  })

  it('aborts long requests still on blue at the drain timeout, headers sent or not, then reports blue drained', async () => {
    const proxy = await proxyWith({ drain: { timeout: '300ms' } })
    const waiting = fetch(`${proxy.url}/hold`)
    const streaming = await fetch(`${proxy.url}/hold-body`)
    expect(streaming.status).toBe(200)
    expect(streaming.headers.get('x-bluegreen-color')).toBe('blue')
    await eventually(() => blue.held.length === 2, { message: 'both requests to reach blue' })

    await change(proxy, '/switch', { to: 'green' })
    const status = await drainStatus(proxy)
    expect(status.blue).toEqual({ requests: 2, websockets: 0 })
    expect(status.draining).toMatchObject({ color: 'blue', drainedAt: null })

    await expect(waiting).rejects.toThrow()
    await expect(streaming.text()).rejects.toThrow()
    await eventually(() => blue.cutOff === 2, { message: 'blue to see both requests closed' })
    const done = await drained(proxy)
    expect(done.blue).toEqual({ requests: 0, websockets: 0 })
    // The proxy itself is fine: new requests go to green.
    expect(await fetch(proxy.url).then((response) => response.text())).toBe('green')
  })

  it('lets a request in flight at a switch complete, and reports blue drained once it has', async () => {
    const proxy = await proxyWith({ drain: { timeout: '1m' } })
    const pending = fetch(`${proxy.url}/hold`)
    await eventually(() => blue.held.length === 1, { message: 'the request to reach blue' })

    await change(proxy, '/switch', { to: 'green' })
    const status = await drainStatus(proxy)
    expect(status.blue.requests).toBe(1)
    expect(status.draining?.drainedAt).toBeNull()

    blue.release()
    const response = await pending
    expect(response.status).toBe(200)
    expect(response.headers.get('x-bluegreen-color')).toBe('blue')
    expect(await response.text()).toBe('blue')
    const done = await drained(proxy)
    expect(done.blue.requests).toBe(0)
    expect(blue.cutOff).toBe(0)
  })

  // That nothing is closed can only be seen once the time is up: a control proxy with the same drain.timeout, switched
  // after the one under test, closing its own WebSocket says so, without a fixed sleep.
  describe('against a control proxy that drains a WebSocket of its own', () => {
    /** Resolves once the control has closed its WebSocket: at least `timeout` after this was called. */
    async function controlDrain(timeout: string): Promise<void> {
      const control = await proxyWith({ drain: { timeout } })
      const socket = await open(control)
      const socketClosed = closed(socket)
      await change(control, '/switch', { to: 'green' })
      await socketClosed
    }

    it('leaves everything open with drain.timeout 0', async () => {
      const proxy = await proxyWith({ drain: { timeout: 0 } })
      const socket = await open(proxy)
      const pending = fetch(`${proxy.url}/hold`)
      await eventually(() => blue.held.length === 1, { message: 'the request to reach blue' })
      await change(proxy, '/switch', { to: 'green' })
      const status = await drainStatus(proxy)
      expect(status.blue).toEqual({ requests: 1, websockets: 1 })
      expect(status.draining).toMatchObject({ color: 'blue', closesAt: null, drainedAt: null })

      await controlDrain('300ms')
      expect(socket.readyState).toBe(WebSocket.OPEN)
      expect(await roundTrip(socket, 'left open?')).toBe('blue:left open?')
      expect((await drainStatus(proxy)).blue).toEqual({ requests: 1, websockets: 1 })
      blue.release()
      expect(await (await pending).text()).toBe('blue')
      await closeWebSocket(socket)
      expect((await drained(proxy)).draining?.closesAt).toBeNull()
    })

    it('cancels the drain when blue gets traffic again before the timeout', async () => {
      // Long enough for the switch back to land well before it, short enough for a quick test.
      const proxy = await proxyWith({ drain: { timeout: '1s' } })
      const socket = await open(proxy)
      await change(proxy, '/switch', { to: 'green' })
      expect((await drainStatus(proxy)).draining?.color).toBe('blue')
      await change(proxy, '/switch', { to: 'blue' })
      // Green lost its traffic in turn; with nothing open on it, it has drained at once.
      const status = await drainStatus(proxy)
      expect(status.draining).toMatchObject({ color: 'green', drainedAt: expect.any(String) })
      expect(status.blue.websockets).toBe(1)

      await controlDrain('1s')
      expect(socket.readyState).toBe(WebSocket.OPEN)
      expect(await roundTrip(socket, 'kept?')).toBe('blue:kept?')
      expect((await drainStatus(proxy)).blue.websockets).toBe(1)
    })
  })

  it('drains the color a change from 90/10 to 100/0 took the traffic from', async () => {
    const proxy = await proxyWith({ drain: { timeout: '1m' }, routing: { sticky: { mode: 'header' } } })
    await change(proxy, '/weights', { blue: 90, green: 10 })
    expect((await drainStatus(proxy)).draining).toBeNull()
    const pending = fetch(`${proxy.url}/hold`, { headers: { 'x-user-id': greenKey() } })
    await eventually(() => green.held.length === 1, { message: 'the request to reach green' })

    await change(proxy, '/weights', { blue: 100, green: 0 })
    const status = await drainStatus(proxy)
    expect(status.green).toEqual({ requests: 1, websockets: 0 })
    expect(status.draining).toMatchObject({ color: 'green', drainedAt: null })

    green.release()
    expect(await (await pending).text()).toBe('green')
    const done = await drained(proxy)
    expect(done.draining?.color).toBe('green')
    expect(done.green.requests).toBe(0)
  })
})
