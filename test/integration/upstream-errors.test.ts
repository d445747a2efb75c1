import { once } from 'node:events'
import { request, type ServerResponse } from 'node:http'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { eventually } from '../helpers/eventually.ts'
import {
  type Blackhole,
  onRequestHead,
  startBlackhole,
  startTcpServer,
  type TcpServer,
} from '../helpers/raw.ts'
import {
  echoUpstream,
  refusedUrl,
  startProxy,
  startServer,
  type TestProxy,
  type TestServer,
} from '../helpers/servers.ts'

/** The contract's proxy error: that status, that code, a JSON body of exactly {error: {code, message}}. */
async function expectProxyError(response: Response, status: number, code: string, color = 'blue') {
  expect(response.status).toBe(status)
  expect(response.headers.get('content-type')).toMatch(/^application\/json/)
  expect(response.headers.get('x-bluegreen-color')).toBe(color)
  const body = (await response.json()) as { error: { code: string; message: string } }
  expect(Object.keys(body)).toEqual(['error'])
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message'])
  expect(body.error.code).toBe(code)
  expect(body.error.message).toEqual(expect.any(String))
  expect(body.error.message.length).toBeGreaterThan(0)
}

/** Reads a response to its end or its error, and says which. */
function readAll(url: string): Promise<{ status: number; received: number; error: Error | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request(url)
    req.once('error', reject)
    req.once('response', (res) => {
      let received = 0
      res.on('data', (chunk: Buffer) => {
        received += chunk.length
      })
      res.once('end', () => resolve({ status: res.statusCode ?? 0, received, error: undefined }))
      res.once('error', (error) => resolve({ status: res.statusCode ?? 0, received, error }))
    })
    req.end()
  })
}

describe('upstream errors', () => {
  /** A healthy upstream in the green pool, reached with the preview header: proof the proxy still serves. */
  let good: TestServer
  const proxies: TestProxy[] = []
  const servers: { close(): Promise<void> }[] = []

  /** A proxy whose blue (active) pool is `blue`; green is the good upstream. */
  /**
   * A proxy to these upstreams. Active health checks are off: the upstreams here answer (or fail) every request
   * alike, so a check would be one more request in their books, and this file is about the forwarder itself.
   */
  async function proxyTo(blue: string[], extra: Record<string, unknown> = {}): Promise<TestProxy> {
    const unchecked = { healthCheck: { enabled: false } }
    const proxy = await startProxy(
      { blue, green: [good.url] },
      {
        routing: { preview: {} },
        pools: { blue: { upstreams: blue, ...unchecked }, green: { upstreams: [good.url], ...unchecked } },
        ...extra,
      },
    )
    proxies.push(proxy)
    return proxy
  }

  async function expectStillServing(proxy: TestProxy): Promise<void> {
    const response = await fetch(`${proxy.url}/alive`, { headers: { 'x-bluegreen-preview': 'green' } })
    expect(response.status).toBe(200)
    expect(((await response.json()) as { name: string }).name).toBe('green')
  }

  beforeAll(async () => {
    good = await echoUpstream('green')
  })
  afterEach(async () => {
    await Promise.all(proxies.splice(0).map((proxy) => proxy.close()))
    await Promise.all(servers.splice(0).map((server) => server.close()))
  })
  afterAll(async () => {
    await good?.close()
  })

  it('answers 502 BG_UPSTREAM_UNREACHABLE when the upstream refuses the connection', async () => {
    const proxy = await proxyTo([await refusedUrl()])
    for (let i = 0; i < 3; i++)
      await expectProxyError(await fetch(`${proxy.url}/x`), 502, 'BG_UPSTREAM_UNREACHABLE')
    await expectStillServing(proxy)
  })

  it('answers 504 BG_UPSTREAM_TIMEOUT when the upstream accepts but never answers', async () => {
    const held: ServerResponse[] = []
    const silent = await startServer((req, res) => {
      // Only the proxied request: the pool's active health checks (GET /) are held here too.
      if (req.url === '/slow') held.push(res)
    })
    servers.push(silent)
    const proxy = await proxyTo([silent.url], { proxy: { timeouts: { header: '300ms' } } })
    const started = Date.now()
    await expectProxyError(await fetch(`${proxy.url}/slow`), 504, 'BG_UPSTREAM_TIMEOUT')
    expect(Date.now() - started).toBeGreaterThanOrEqual(250)
    // The proxy gave up on the upstream request too, rather than leaving it open.
    await eventually(() => held.length === 1 && held[0]!.destroyed, {
      message: 'the upstream request to close',
    })
    await expectStillServing(proxy)
  })

  it('cuts the response short when the upstream stalls mid-body past the body timeout', async () => {
    const stalling = await startServer((_req, res) => {
      res.writeHead(200, { 'content-length': '100000' })
      res.write(Buffer.alloc(1000))
    })
    servers.push(stalling)
    const proxy = await proxyTo([stalling.url], { proxy: { timeouts: { body: '300ms' } } })
    const result = await readAll(`${proxy.url}/stall`)
    expect(result.status).toBe(200)
    expect(result.received).toBe(1000)
    expect(result.error).toBeInstanceOf(Error)
    await expectStillServing(proxy)
  })

  it.each([
    ['with a content-length', { 'content-length': '100000' }],
    ['chunked', {}],
  ])('cuts the response short when the upstream resets mid-body (%s)', async (_label, headers) => {
    const resetting = await startServer((req, res) => {
      res.writeHead(200, headers)
      res.write(Buffer.alloc(1000), () => setImmediate(() => req.socket.destroy()))
    })
    servers.push(resetting)
    const proxy = await proxyTo([resetting.url])
    const result = await readAll(`${proxy.url}/reset`)
    expect(result.status).toBe(200)
    expect(result.received).toBeLessThan(100_000)
    expect(result.error).toBeInstanceOf(Error)
    await expectStillServing(proxy)
  })

  describe('an upstream that speaks no HTTP', () => {
    const replies: Record<string, string | null> = {
      '/hello': 'HELLO\r\n\r\n',
      '/bad-header-line': 'HTTP/1.1 200 OK\r\nThis is not a header\r\nContent-Length: 2\r\n\r\nok',
      '/bad-status': 'HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok',
      '/control-char': 'HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\nok',
      '/two-lengths': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!',
      '/close-without-answer': null,
    }
    let garbage: TcpServer
    beforeAll(async () => {
      garbage = await startTcpServer((socket) => {
        onRequestHead(socket, (head) => {
          const path = head.split(' ')[1] ?? ''
          const reply = replies[path]
          if (reply) socket.end(reply)
          else socket.destroy()
        })
      })
    })
    afterAll(async () => {
      await garbage?.close()
    })

    it.each(Object.keys(replies))('answers 502 BG_UPSTREAM_UNREACHABLE for %s', async (path) => {
      const proxy = await proxyTo([garbage.url])
      await expectProxyError(await fetch(`${proxy.url}${path}`), 502, 'BG_UPSTREAM_UNREACHABLE')
      await expectStillServing(proxy)
    })
  })

  describe('a client that goes away', () => {
    it('aborts the upstream request when the client disconnects while the upstream is working', async () => {
      const seen: { res: ServerResponse; closedEarly?: boolean }[] = []
      const working = await startServer((req, res) => {
        // Health checks reach this upstream too: answer them, and count only the proxied request.
        if (req.url !== '/work') {
          res.end('ok')
          return
        }
        const entry: (typeof seen)[number] = { res }
        res.once('close', () => {
          entry.closedEarly = !res.writableEnded
        })
        seen.push(entry)
      })
      servers.push(working)
      const proxy = await proxyTo([working.url])
      const req = request(`${proxy.url}/work`)
      req.on('error', () => {})
      req.end()
      await eventually(() => seen.length === 1, { message: 'the request upstream' })
      req.destroy()
      await eventually(() => seen[0]!.closedEarly === true, { message: 'the upstream request to be aborted' })
      await expectStillServing(proxy)
    })

    it('aborts the upstream request when the client disconnects halfway through its body', async () => {
      const seen: { received: number; aborted?: boolean }[] = []
      const reading = await startServer((req, res) => {
        const entry: (typeof seen)[number] = { received: 0 }
        seen.push(entry)
        req.on('data', (chunk: Buffer) => {
          entry.received += chunk.length
        })
        req.once('error', () => {
          entry.aborted = true
        })
        req.once('close', () => {
          entry.aborted ??= !req.complete
        })
        req.once('end', () => res.end('done'))
      })
      servers.push(reading)
      const proxy = await proxyTo([reading.url])
      const req = request(`${proxy.url}/upload`, { method: 'POST', headers: { 'content-length': '1000000' } })
      req.on('error', () => {})
      req.write(Buffer.alloc(10_000))
      await eventually(() => seen[0]?.received === 10_000, { message: 'the first bytes upstream' })
      req.destroy()
      await eventually(() => seen[0]!.aborted === true, { message: 'the upstream request to be aborted' })
      await expectStillServing(proxy)
    })

    it('aborts the upstream response when the client disconnects while it is streaming', async () => {
      const state = { closedEarly: undefined as boolean | undefined, written: 0 }
      const streaming = await startServer(async (_req, res) => {
        res.once('close', () => {
          state.closedEarly = !res.writableEnded
        })
        res.writeHead(200, { 'content-length': String(1024 * 1024 * 1024) })
        const chunk = Buffer.alloc(64 * 1024)
        while (!res.destroyed && state.written < 1024 * 1024 * 1024) {
          state.written += chunk.length
          if (!res.write(chunk)) await once(res, 'drain').catch(() => {})
        }
      })
      servers.push(streaming)
      const proxy = await proxyTo([streaming.url])
      const req = request(`${proxy.url}/stream`)
      req.on('error', () => {})
      req.once('response', (res) => {
        res.once('data', () => req.destroy())
      })
      req.end()
      await eventually(() => state.closedEarly === true, { message: 'the upstream response to be aborted' })
      await expectStillServing(proxy)
    })
  })

  it('answers 503 BG_NO_HEALTHY_UPSTREAM when the chosen pool is empty', async () => {
    const proxy = await proxyTo([])
    await expectProxyError(await fetch(`${proxy.url}/x`), 503, 'BG_NO_HEALTHY_UPSTREAM')
    await expectStillServing(proxy)
  })

  it("relays the upstream's own 5xx as it is, not as a proxy error", async () => {
    const failing = await startServer((_req, res) => {
      res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '5' })
      res.end('upstream maintenance')
    })
    servers.push(failing)
    const proxy = await proxyTo([failing.url])
    const response = await fetch(`${proxy.url}/x`)
    expect(response.status).toBe(503)
    expect(response.headers.get('retry-after')).toBe('5')
    expect(await response.text()).toBe('upstream maintenance')
  })

  describe('retrying a connection that could not be made', () => {
    it.each(['round-robin', 'least-outstanding'])(
      'serves every request from the live upstream when another is refused (%s)',
      async (balance) => {
        const live = await echoUpstream('blue-live')
        servers.push(live)
        const dead = await refusedUrl()
        const proxy = await proxyTo([], {
          pools: { blue: { upstreams: [dead, live.url], balance }, green: { upstreams: [good.url] } },
        })
        for (let i = 0; i < 10; i++) {
          const response = await fetch(`${proxy.url}/r/${i}`, { method: 'POST', body: `body ${i}` })
          expect(response.status, await response.clone().text()).toBe(200)
          const seen = (await response.json()) as { name: string; bodyLength: number }
          expect(seen).toMatchObject({ name: 'blue-live', bodyLength: `body ${i}`.length })
        }
      },
    )

    it('answers 502 once every upstream of the pool has refused', async () => {
      const dead = [await refusedUrl(), await refusedUrl()]
      const proxy = await proxyTo(dead)
      await expectProxyError(await fetch(`${proxy.url}/x`), 502, 'BG_UPSTREAM_UNREACHABLE')
      await expectStillServing(proxy)
    })
  })

  // undici runs its connect, header and body timers on a clock of about half a second, so a 200-300 ms timeout
  // fires within about a second: these tests take that long.
  describe('connect timeouts (a loopback listener that never accepts)', () => {
    let blackhole: Blackhole
    beforeAll(async () => {
      blackhole = await startBlackhole()
    })
    afterAll(async () => {
      await blackhole?.close()
    })

    it('answers 504 BG_UPSTREAM_TIMEOUT when the connection cannot be made in time', async () => {
      const proxy = await proxyTo([blackhole.url], { proxy: { timeouts: { connect: '300ms' } } })
      const started = Date.now()
      await expectProxyError(await fetch(`${proxy.url}/x`), 504, 'BG_UPSTREAM_TIMEOUT')
      expect(Date.now() - started).toBeGreaterThanOrEqual(250)
      await expectStillServing(proxy)
    })

    it('retries a connect timeout on another upstream of the pool', async () => {
      const live = await echoUpstream('blue-live')
      servers.push(live)
      const proxy = await proxyTo([blackhole.url, live.url], { proxy: { timeouts: { connect: '200ms' } } })
      // Two requests: whatever the order, one of them tries the blackhole first.
      for (let i = 0; i < 2; i++) {
        const response = await fetch(`${proxy.url}/r/${i}`)
        expect(response.status).toBe(200)
        expect(((await response.json()) as { name: string }).name).toBe('blue-live')
      }
    })
  })
})
