import { connect } from 'node:net'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { type Blackhole, parseRawResponse, rawRequest, startBlackhole } from '../helpers/raw.ts'
import { refusedUrl, startProxy, startServer, type TestProxy } from '../helpers/servers.ts'
import {
  closeWebSocket,
  openWebSocket,
  roundTrip,
  upgrade,
  type WsUpstream,
  wsEchoUpstream,
} from '../helpers/websocket.ts'

const wsUrl = (httpUrl: string) => httpUrl.replace(/^http:/, 'ws:')

function errorCode(body: string): string | undefined {
  return (JSON.parse(body) as { error?: { code?: string } }).error?.code
}

describe('websockets', () => {
  let blue: WsUpstream
  let green: WsUpstream
  const proxies: TestProxy[] = []
  const sockets: WebSocket[] = []
  const extraServers: { close(): Promise<void> }[] = []

  /**
   * A WebSocket upstream that holds each handshake until `release()`; `closed()` says whether the upstream end of
   * the held connection has closed. Closed with the other extra servers.
   */
  async function heldUpstream() {
    let release = () => {}
    let upstreamClosed = false
    const slow = await wsEchoUpstream('blue', {
      beforeAccept: (_req, socket) => {
        socket.once('close', () => {
          upstreamClosed = true
        })
        return new Promise<void>((resolve) => {
          release = resolve
        })
      },
    })
    extraServers.push(slow)
    return { slow, release: () => release(), closed: () => upstreamClosed }
  }

  /** startProxy, closed after the test. */
  async function proxyWith(...args: Parameters<typeof startProxy>): Promise<TestProxy> {
    const proxy = await startProxy(...args)
    proxies.push(proxy)
    return proxy
  }

  /** A WebSocket through the proxy, closed after the test. */
  async function open(proxy: TestProxy, path: string): Promise<WebSocket> {
    const socket = await openWebSocket(`${wsUrl(proxy.url)}${path}`)
    sockets.push(socket)
    return socket
  }

  beforeAll(async () => {
    blue = await wsEchoUpstream('blue')
    green = await wsEchoUpstream('green')
  })
  afterEach(async () => {
    await Promise.all(sockets.splice(0).map((socket) => closeWebSocket(socket)))
    await Promise.all(proxies.splice(0).map((proxy) => proxy.close()))
    await Promise.all(extraServers.splice(0).map((server) => server.close()))
  })
  afterAll(async () => {
    await blue?.close()
    await green?.close()
  })

  describe('through a proxy on blue', () => {
    it('echoes messages both ways, several on one socket', async () => {
      const proxy = await proxyWith({ blue: [blue.url], green: [green.url] })
      const socket = await open(proxy, '/chat')
      for (const message of ['one', 'two', 'a longer third message '.repeat(20)]) {
        expect(await roundTrip(socket, message)).toBe(`blue:${message}`)
      }
      // Binary frames pass through as they are.
      const binary = new Promise<ArrayBuffer>((resolve) =>
        socket.addEventListener('message', (event) => resolve(event.data as ArrayBuffer), { once: true }),
      )
      socket.binaryType = 'arraybuffer'
      socket.send(new Uint8Array([0, 1, 2, 255]))
      expect([...new Uint8Array(await binary)]).toEqual([0, 1, 2, 255])
    })

    it('answers the 101 with the color header and the upstream handshake', async () => {
      const proxy = await proxyWith({ blue: [blue.url], green: [green.url] })
      const result = await upgrade(proxy.url, '/h')
      expect(result.kind).toBe('upgrade')
      if (result.kind !== 'upgrade') return
      expect(result.response.statusCode).toBe(101)
      expect(result.response.headers['x-bluegreen-color']).toBe('blue')
      expect(result.response.headers['x-upstream']).toBe('blue')
      expect(result.response.headers['sec-websocket-accept']).toEqual(expect.any(String))
      result.socket.destroy()
    })

    it('passes the path through as sent and sets the forwarding headers', async () => {
      const proxy = await proxyWith({ blue: [blue.url], green: [green.url] })
      const before = blue.upgrades.length
      for (const path of ['/a/../b?x=1', '//double', '/enc%2Fded?q=%20']) {
        const result = await upgrade(proxy.url, path, { 'x-forwarded-for': '6.6.6.6' })
        expect(result.kind).toBe('upgrade')
        if (result.kind === 'upgrade') result.socket.destroy()
      }
      const seen = blue.upgrades.slice(before)
      expect(seen.map((entry) => entry.url)).toEqual(['/a/../b?x=1', '//double', '/enc%2Fded?q=%20'])
      expect(seen[0]!.headers['x-forwarded-for']).toBe('127.0.0.1')
      expect(seen[0]!.headers['x-forwarded-proto']).toBe('http')
      expect(seen[0]!.headers.upgrade).toBe('websocket')
    })

    it('keeps an open socket on its color across a switch; new sockets go to the new color', async () => {
      const proxy = await proxyWith({ blue: [blue.url], green: [green.url] })
      const before = await open(proxy, '/live')
      expect(await roundTrip(before, 'hi')).toBe('blue:hi')
      const switched = await adminPost(proxy.admin, '/switch', { to: 'green' })
      expect(switched.status).toBe(200)
      expect(await roundTrip(before, 'still there?')).toBe('blue:still there?')
      const after = await open(proxy, '/live')
      expect(await roundTrip(after, 'hi')).toBe('green:hi')
      expect(await roundTrip(before, 'and now?')).toBe('blue:and now?')
    })

    it('closes the upstream side when the client closes', async () => {
      const own = await wsEchoUpstream('blue')
      extraServers.push(own)
      const proxy = await proxyWith({ blue: [own.url], green: [green.url] })
      const socket = await open(proxy, '/bye')
      await eventually(() => own.open === 1, { message: 'the upstream socket to open' })
      await closeWebSocket(socket)
      await eventually(() => own.open === 0, { message: 'the upstream socket to close' })
    })

    it('closes the client side when the upstream goes away', async () => {
      const leaving = await wsEchoUpstream('blue')
      extraServers.push(leaving)
      const proxy = await proxyWith({ blue: [leaving.url], green: [green.url] })
      const socket = await open(proxy, '/x')
      const closed = new Promise<void>((resolve) => socket.addEventListener('close', () => resolve()))
      await leaving.close()
      await closed
    })
  })

  describe('upstream failures', () => {
    it('answers 502 when the upstream refuses the connection, and keeps serving', async () => {
      const proxy = await proxyWith(
        { blue: [await refusedUrl()], green: [green.url] },
        { routing: { preview: {} } },
      )
      for (let i = 0; i < 2; i++) {
        const result = await upgrade(proxy.url, '/ws')
        expect(result.kind).toBe('response')
        if (result.kind !== 'response') return
        expect(result.response.statusCode).toBe(502)
        expect(errorCode(result.body)).toBe('BG_UPSTREAM_UNREACHABLE')
      }
      const previewed = await upgrade(proxy.url, '/ws', { 'x-bluegreen-preview': 'green' })
      expect(previewed.kind).toBe('upgrade')
      if (previewed.kind === 'upgrade') previewed.socket.destroy()
    })

    it('relays a non-101 answer from an upstream with no WebSocket endpoint', async () => {
      const plain = await startServer((_req, res) => {
        res.writeHead(404, { 'content-type': 'text/plain' })
        res.end('no websockets here')
      })
      extraServers.push(plain)
      const proxy = await proxyWith({ blue: [plain.url], green: [green.url] })
      const result = await upgrade(proxy.url, '/ws')
      expect(result.kind).toBe('response')
      if (result.kind !== 'response') return
      expect(result.response.statusCode).toBe(404)
      expect(result.response.headers['x-bluegreen-color']).toBe('blue')
      expect(result.body).toBe('no websockets here')
    })

    it('closes the upstream request when the client gives up before the upstream accepts', async () => {
      const { slow, release, closed } = await heldUpstream()
      const proxy = await proxyWith({ blue: [slow.url], green: [green.url] })
      const client = connect(Number(new URL(proxy.url).port), '127.0.0.1')
      client.on('error', () => {})
      client.write(
        'GET /ws HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      )
      await eventually(() => slow.upgrades.length === 1, { message: 'the upgrade to reach the upstream' })
      client.destroy()
      release()
      await eventually(closed, { message: 'the upstream request to be closed' })
      expect(slow.open).toBe(0)
    })

    it('closes a pending upstream handshake when the proxy shuts down', async () => {
      const { slow, release, closed } = await heldUpstream()
      const shuttingDown = await proxyWith({ blue: [slow.url], green: [green.url] })
      const pending = upgrade(shuttingDown.url, '/ws')
      pending.catch(() => {})
      await eventually(() => slow.upgrades.length === 1, { message: 'the upgrade to reach the upstream' })
      await shuttingDown.close()
      // The upstream reads nothing until it accepts: only then can it see the proxy has hung up.
      release()
      await eventually(closed, { message: 'the upstream connection to be closed' })
      expect(slow.open).toBe(0)
    })

    describe('connect timeout (a loopback listener that never accepts)', () => {
      let blackhole: Blackhole
      beforeAll(async () => {
        blackhole = await startBlackhole()
      })
      afterAll(async () => {
        await blackhole?.close()
      })

      it('answers 504 BG_UPSTREAM_TIMEOUT', async () => {
        const proxy = await proxyWith(
          { blue: [blackhole.url], green: [green.url] },
          { proxy: { timeouts: { connect: '300ms' } } },
        )
        const result = await upgrade(proxy.url, '/ws')
        expect(result.kind).toBe('response')
        if (result.kind !== 'response') return
        expect(result.response.statusCode).toBe(504)
        expect(errorCode(result.body)).toBe('BG_UPSTREAM_TIMEOUT')
      })
    })
  })

  it('declines an upgrade to anything but WebSocket: the request is served as plain HTTP/1.1, WebSockets still upgrade', async () => {
    const proxy = await proxyWith({ blue: [blue.url], green: [green.url] })
    const raw = await rawRequest(
      proxy.url,
      'GET / HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade, close\r\nUpgrade: h2c\r\n\r\n',
    )
    const response = parseRawResponse(raw)
    expect(response.status, raw).toBe(200)
    expect(response.head).toMatch(/\r\nx-bluegreen-color: blue/i)
    expect(response.body).toContain('blue')
    const socket = await open(proxy, '/after')
    expect(await roundTrip(socket, 'ok')).toBe('blue:ok')
    const plain = await fetch(`${proxy.url}/plain`)
    expect(await plain.text()).toBe('blue')
  })
})
