import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { Agent, type IncomingMessage, request } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { eventually } from '../helpers/eventually.ts'
import { onRequestHead, parseRawResponse, rawRequest, startTcpServer } from '../helpers/raw.ts'
import { echoUpstream, startProxy, startServer, type TestProxy, type TestServer } from '../helpers/servers.ts'

interface Echo {
  name: string
  method: string
  url: string
  headers: Record<string, string | string[]>
  rawHeaders: string[]
  bodyLength: number
}

interface Sent {
  status: number
  headers: IncomingMessage['headers']
  rawHeaders: string[]
  body: Buffer
  /** The client side's port: the same one for two requests means the same connection. */
  localPort: number | undefined
}

/**
 * One request with node:http, given the path as options.path: that is sent as it is, where a URL (and fetch)
 * would be normalized first (/a/../b becomes /b).
 */
function send(
  url: string,
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: Buffer | string; agent?: Agent } = {},
): Promise<Sent> {
  const { hostname, port } = new URL(url)
  const headers = { ...options.headers }
  if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body))
  return new Promise((resolve, reject) => {
    const req = request({
      host: hostname,
      port,
      path,
      method: options.method ?? 'GET',
      headers,
      agent: options.agent,
    })
    req.once('error', reject)
    req.once('response', async (res) => {
      const localPort = res.socket.localPort
      const chunks: Buffer[] = []
      try {
        for await (const chunk of res) chunks.push(chunk as Buffer)
      } catch (error) {
        reject(error)
        return
      }
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        rawHeaders: res.rawHeaders,
        body: Buffer.concat(chunks),
        localPort,
      })
    })
    req.end(options.body)
  })
}

async function echoed(url: string, path: string, options?: Parameters<typeof send>[2]): Promise<Echo> {
  const response = await send(url, path, options)
  expect(response.status).toBe(200)
  return JSON.parse(response.body.toString()) as Echo
}

async function textOf(res: IncomingMessage): Promise<string> {
  let text = ''
  for await (const chunk of res) text += chunk
  return text
}

function rawNames(rawHeaders: readonly string[]): string[] {
  return rawHeaders.filter((_, i) => i % 2 === 0).map((name) => name.toLowerCase())
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')

/**
 * The value of `progress` once it has stopped changing for `quietMs`: how far a stream got before backpressure
 * held it. If nothing holds it, the stream runs to its end and that is what comes back.
 */
function settled(progress: () => number, quietMs = 300): Promise<number> {
  let last = -1
  let since = Date.now()
  return eventually(
    () => {
      const now = progress()
      if (now !== last) {
        last = now
        since = Date.now()
        return undefined
      }
      return Date.now() - since >= quietMs ? { value: now } : undefined
    },
    { timeout: 10_000, message: 'the stream to settle' },
  ).then(({ value }) => value)
}

describe('forwarding', () => {
  let echo: TestServer
  let echoConnections = 0
  let lab: TestServer
  /** How far /big has got: bytes handed to res.write, and whether it has written them all. */
  const big = { written: 0, done: false }
  /** How much of its body /progress-upload has read. */
  const progressUpload = { read: 0 }
  /** How far /slow-upload has got reading its body, and what releases it. */
  const slowUpload = { read: 0, release: () => {} }
  let proxy: TestProxy
  let trustingProxy: TestProxy
  let hostRewritingProxy: TestProxy
  let colorlessProxy: TestProxy
  let renamedColorProxy: TestProxy

  beforeAll(async () => {
    echo = await echoUpstream('blue')
    echo.server.on('connection', () => echoConnections++)
    lab = await startServer(async (req, res) => {
      const url = new URL(req.url ?? '/', 'http://lab')
      switch (url.pathname) {
        case '/cookies':
          res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; Path=/; HttpOnly'])
          res.setHeader('x-bluegreen-color', 'forged')
          res.end('ok')
          return
        case '/hop':
          res.setHeader('connection', 'keep-alive, X-Hop')
          res.setHeader('x-hop', 'secret')
          res.setHeader('keep-alive', 'timeout=5, max=7')
          res.setHeader('proxy-connection', 'keep-alive')
          res.setHeader('proxy-authenticate', 'Basic realm="x"')
          res.setHeader('upgrade', 'h2c')
          res.setHeader('x-end-to-end', 'kept')
          res.end('ok')
          return
        case '/sized':
          res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '1234' })
          res.end(req.method === 'HEAD' ? undefined : 'x'.repeat(1234))
          return
        case '/status': {
          const status = Number(url.searchParams.get('code'))
          res.writeHead(status, { etag: '"v1"' })
          res.end()
          return
        }
        case '/upload': {
          const hash = createHash('sha256')
          let length = 0
          for await (const chunk of req) {
            hash.update(chunk as Buffer)
            length += (chunk as Buffer).length
          }
          res.setHeader('content-type', 'application/json')
          res.end(
            JSON.stringify({
              length,
              sha256: hash.digest('hex'),
              transferEncoding: req.headers['transfer-encoding'] ?? null,
              contentLength: req.headers['content-length'] ?? null,
              expect: req.headers.expect ?? null,
            }),
          )
          return
        }
        case '/progress-upload': {
          const hash = createHash('sha256')
          for await (const chunk of req) {
            hash.update(chunk as Buffer)
            progressUpload.read += (chunk as Buffer).length
          }
          res.end(
            JSON.stringify({
              length: progressUpload.read,
              sha256: hash.digest('hex'),
              transferEncoding: req.headers['transfer-encoding'] ?? null,
            }),
          )
          return
        }
        case '/reject-upload':
          // Answers without reading the body, as an upstream rejecting an upload too large for it would. (With
          // `Connection: close` as well, the upstream's socket resets under the body still arriving, and undici
          // reports the failed write rather than the answer already received: a 502. Node's own client does the
          // same, nodejs/node#54366.)
          res.writeHead(413, { 'content-type': 'text/plain' })
          res.end('too large')
          return
        case '/slow-upload': {
          await new Promise<void>((resolve) => {
            slowUpload.release = resolve
          })
          for await (const chunk of req) slowUpload.read += (chunk as Buffer).length
          res.end(String(slowUpload.read))
          return
        }
        case '/big': {
          const size = Number(url.searchParams.get('size'))
          const chunk = Buffer.alloc(64 * 1024, 'b')
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) })
          while (big.written < size && !res.destroyed) {
            big.written += chunk.length
            if (!res.write(chunk)) await once(res, 'drain')
          }
          big.done = true
          res.end()
          return
        }
        default:
          res.statusCode = 404
          res.end()
      }
    })
    const pools = { blue: [echo.url], green: [lab.url] }
    // Preview routing sends a request to the lab upstream (green) with a header; everything else goes to echo.
    const preview = { routing: { preview: {} } }
    proxy = await startProxy(pools, preview)
    trustingProxy = await startProxy(pools, { proxy: { trustedProxies: ['127.0.0.0/8'] } })
    hostRewritingProxy = await startProxy(pools, { proxy: { preserveHost: false } })
    colorlessProxy = await startProxy(pools, { ...preview, proxy: { colorHeader: false } })
    renamedColorProxy = await startProxy(pools, { proxy: { colorHeader: 'X-Served-By' } })
  })

  afterAll(async () => {
    slowUpload.release()
    await Promise.all(
      [proxy, trustingProxy, hostRewritingProxy, colorlessProxy, renamedColorProxy].map((p) => p?.close()),
    )
    await echo?.close()
    await lab?.close()
  })

  const toLab = { 'x-bluegreen-preview': 'green' }

  describe('methods and request targets', () => {
    it.each(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'PURGE', 'PROPFIND', 'QUERY'])(
      'passes %s through',
      async (method) => {
        const body = method === 'GET' ? undefined : 'payload'
        const seen = await echoed(proxy.url, '/m', { method, body })
        expect(seen.method).toBe(method)
        expect(seen.bodyLength).toBe(body ? 7 : 0)
      },
    )

    it.each([
      '/plain',
      '/enc%20oded%2Fslash%3F?q=a%26b&x=%E2%9C%93',
      '//double//slashes',
      '/a/../b',
      '/./dot/./segments',
      '/%2e%2e/%2E%2E/encoded-dots',
      '/semi;matrix=1',
      '/?',
      '/search?q=1&q=2&empty=&flag',
      '/raw?a=%zz&b=%',
    ])('passes the request target %s through byte for byte', async (path) => {
      const seen = await echoed(proxy.url, path)
      expect(seen.url).toBe(path)
    })

    it('answers a request target it cannot forward (OPTIONS *) with 400, not an upstream error', async () => {
      const raw = await rawRequest(
        proxy.url,
        'OPTIONS * HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n',
      )
      const response = parseRawResponse(raw)
      expect(response.status).toBe(400)
      expect((JSON.parse(response.body) as { error: { code: string } }).error.code).toBe('BG_BAD_REQUEST')
    })

    it('answers a request with two Host headers with 400 (RFC 9112 3.2), not an upstream error', async () => {
      const raw = await rawRequest(
        proxy.url,
        'GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n',
      )
      expect(parseRawResponse(raw).status).toBe(400)
    })
  })

  describe('request headers as the upstream sees them', () => {
    const clientHeaders = {
      host: 'example.test',
      connection: 'keep-alive, X-Hop',
      'x-hop': 'secret',
      'keep-alive': 'timeout=30',
      te: 'trailers',
      'proxy-authorization': 'Basic c2VjcmV0',
      'x-forwarded-for': '6.6.6.6',
      'x-forwarded-proto': 'https',
      'x-forwarded-host': 'evil.test',
      forwarded: 'for=6.6.6.6',
      authorization: 'Bearer end-to-end',
      'x-custom': 'kept',
    }

    it('drops hop-by-hop headers, replaces forwarding headers from an untrusted client, keeps Host', async () => {
      const seen = await echoed(proxy.url, '/h', { headers: clientHeaders })
      const names = rawNames(seen.rawHeaders)
      for (const hop of ['connection', 'x-hop', 'keep-alive', 'te', 'proxy-authorization', 'forwarded']) {
        // undici opens its own keep-alive connection; only the client's Connection must not come through.
        if (hop === 'connection') expect(seen.headers.connection ?? 'keep-alive').toBe('keep-alive')
        else expect(names).not.toContain(hop)
      }
      expect(seen.headers.host).toBe('example.test')
      expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1')
      expect(seen.headers['x-forwarded-proto']).toBe('http')
      expect(seen.headers['x-forwarded-host']).toBe('example.test')
      expect(seen.headers.authorization).toBe('Bearer end-to-end')
      expect(seen.headers['x-custom']).toBe('kept')
      // Each forwarding header exactly once.
      expect(names.filter((name) => name === 'x-forwarded-for')).toHaveLength(1)
    })

    it('keeps and extends forwarding headers from a trusted proxy', async () => {
      const seen = await echoed(trustingProxy.url, '/h', { headers: clientHeaders })
      expect(seen.headers['x-forwarded-for']).toBe('6.6.6.6, 127.0.0.1')
      expect(seen.headers['x-forwarded-proto']).toBe('https')
      expect(seen.headers['x-forwarded-host']).toBe('evil.test')
      expect(seen.headers.forwarded).toBe('for=6.6.6.6')
      expect(rawNames(seen.rawHeaders)).not.toContain('x-hop')
    })

    it("sends the upstream's own host with preserveHost: false, and the client's in X-Forwarded-Host", async () => {
      const seen = await echoed(hostRewritingProxy.url, '/h', { headers: clientHeaders })
      expect(seen.headers.host).toBe(`127.0.0.1:${echo.port}`)
      expect(seen.headers['x-forwarded-host']).toBe('example.test')
    })
  })

  describe('response headers', () => {
    it('keeps every Set-Cookie and answers with its own color header, never the upstream one', async () => {
      const response = await send(proxy.url, '/cookies', { headers: toLab })
      expect(response.status).toBe(200)
      expect(response.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/; HttpOnly'])
      expect(rawNames(response.rawHeaders).filter((name) => name === 'x-bluegreen-color')).toHaveLength(1)
      expect(response.headers['x-bluegreen-color']).toBe('green')
    })

    it("drops the upstream's hop-by-hop headers", async () => {
      const response = await send(proxy.url, '/hop', { headers: toLab })
      expect(response.status).toBe(200)
      const names = rawNames(response.rawHeaders)
      for (const hop of ['x-hop', 'proxy-connection', 'proxy-authenticate', 'upgrade']) {
        expect(names).not.toContain(hop)
      }
      // The proxy's own connection to this client, not the upstream's.
      expect(response.headers.connection).toBe('keep-alive')
      expect(response.headers['keep-alive']).not.toBe('timeout=5, max=7')
      expect(response.headers['x-end-to-end']).toBe('kept')
      expect(response.body.toString()).toBe('ok')
    })

    it('skips informational responses (103 Early Hints) and relays the final one', async () => {
      const hinting = await startTcpServer((socket) => {
        onRequestHead(socket, () => {
          socket.end(
            'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n' +
              'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfinal',
          )
        })
      })
      const hintProxy = await startProxy({ blue: [hinting.url], green: [] })
      try {
        const response = await send(hintProxy.url, '/')
        expect(response.status).toBe(200)
        expect(response.body.toString()).toBe('final')
      } finally {
        await hintProxy.close()
        await hinting.close()
      }
    })

    it('names the color on every response, under the configured name, or not at all when off', async () => {
      expect((await send(proxy.url, '/c')).headers['x-bluegreen-color']).toBe('blue')
      const renamed = await send(renamedColorProxy.url, '/c')
      expect(renamed.headers['x-served-by']).toBe('blue')
      expect(renamed.headers['x-bluegreen-color']).toBeUndefined()
      const off = await send(colorlessProxy.url, '/cookies', { headers: toLab })
      expect(off.status).toBe(200)
      // Off means off: the upstream's own header of that name passes as any other header would.
      expect(off.headers['x-bluegreen-color']).toBe('forged')
      const plain = await send(colorlessProxy.url, '/c')
      expect(plain.headers['x-bluegreen-color']).toBeUndefined()
    })
  })

  describe('request bodies', () => {
    it('streams a chunked request body as it arrives, before the client has finished it', async () => {
      const first = randomBytes(70_000)
      const last = randomBytes(1003)
      progressUpload.read = 0
      const req = request(`${proxy.url}/progress-upload`, { method: 'POST', headers: toLab })
      const response = new Promise<string>((resolve, reject) => {
        req.once('error', reject)
        req.once('response', async (res) => resolve(await textOf(res)))
      })
      req.write(first)
      await eventually(() => progressUpload.read === first.length, { message: 'the first chunk upstream' })
      req.end(last)
      expect(JSON.parse(await response)).toEqual({
        length: first.length + last.length,
        sha256: sha256(Buffer.concat([first, last])),
        transferEncoding: 'chunked',
      })
    })

    it('streams a 20 MB body to the upstream intact', async () => {
      const body = randomBytes(20 * 1024 * 1024)
      const result = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = request(`${proxy.url}/upload`, {
          method: 'PUT',
          headers: { ...toLab, 'content-length': String(body.length) },
        })
        req.once('error', reject)
        req.once('response', async (res) => resolve({ status: res.statusCode ?? 0, text: await textOf(res) }))
        void (async () => {
          for (let offset = 0; offset < body.length; offset += 256 * 1024) {
            if (!req.write(body.subarray(offset, offset + 256 * 1024))) await once(req, 'drain')
          }
          req.end()
        })()
      })
      expect(result.status).toBe(200)
      expect(JSON.parse(result.text)).toMatchObject({
        length: body.length,
        sha256: sha256(body),
        contentLength: String(body.length),
        transferEncoding: null,
      })
    })

    it('holds the client back while the upstream is not reading, instead of buffering the body', async () => {
      const size = 64 * 1024 * 1024
      const chunk = Buffer.alloc(64 * 1024, 'u')
      let written = 0
      const req = request(`${proxy.url}/slow-upload`, {
        method: 'POST',
        headers: { ...toLab, 'content-length': String(size) },
      })
      const response = new Promise<string>((resolve, reject) => {
        req.once('error', reject)
        req.once('response', async (res) => resolve(await textOf(res)))
      })
      const writing = (async () => {
        while (written < size) {
          written += chunk.length
          if (!req.write(chunk)) await once(req, 'drain')
        }
        req.end()
      })()
      const heldAt = await settled(() => written)
      expect(heldAt).toBeLessThan(size / 2)
      slowUpload.release()
      await writing
      expect(await response).toBe(String(size))
    })

    it('relays an answer the upstream gives before reading the body, and the connection stays usable', async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 })
      try {
        const rejected = await send(proxy.url, '/reject-upload', {
          method: 'POST',
          headers: toLab,
          body: randomBytes(8 * 1024 * 1024),
          agent,
        })
        expect(rejected.status).toBe(413)
        expect(rejected.body.toString()).toBe('too large')
        // The rest of that body must not be left on the connection: the next request on it is answered.
        const next = await send(proxy.url, '/sized', { headers: toLab, agent })
        expect(next.localPort).toBe(rejected.localPort)
        expect(next.body.toString()).toBe('x'.repeat(1234))
      } finally {
        agent.destroy()
      }
    }, 10_000)

    it('answers Expect: 100-continue so the client sends its body', async () => {
      const body = randomBytes(50_000)
      const { status, seen, continued } = await new Promise<{
        status: number
        seen: string
        continued: boolean
      }>((resolve, reject) => {
        let continued = false
        const req = request(`${proxy.url}/upload`, {
          method: 'POST',
          headers: { ...toLab, expect: '100-continue', 'content-length': String(body.length) },
        })
        req.once('error', reject)
        req.once('continue', () => {
          continued = true
          req.end(body)
        })
        req.once('response', async (res) =>
          resolve({ status: res.statusCode ?? 0, seen: await textOf(res), continued }),
        )
      })
      expect(continued).toBe(true)
      expect(status).toBe(200)
      // The proxy answered the expectation itself; the upstream gets a plain request with the body.
      expect(JSON.parse(seen)).toMatchObject({ length: body.length, sha256: sha256(body), expect: null })
    })
  })

  describe('response bodies', () => {
    it('streams a large response with backpressure: a client that stops reading holds the upstream back', async () => {
      const size = 64 * 1024 * 1024
      big.written = 0
      big.done = false
      const { res, req } = await new Promise<{ res: IncomingMessage; req: ReturnType<typeof request> }>(
        (resolve, reject) => {
          const req = request(`${proxy.url}/big?size=${size}`, { headers: toLab })
          req.once('error', reject)
          req.once('response', (res) => {
            res.pause()
            resolve({ res, req })
          })
          req.end()
        },
      )
      try {
        expect(res.headers['content-length']).toBe(String(size))
        const heldAt = await settled(() => big.written)
        expect(big.done).toBe(false)
        expect(heldAt).toBeLessThan(size / 2)
        // Reading again releases it all, intact.
        let received = 0
        res.on('data', (chunk: Buffer) => {
          received += chunk.length
        })
        res.resume()
        await once(res, 'end')
        expect(received).toBe(size)
        expect(big.done).toBe(true)
      } finally {
        req.destroy()
      }
    })

    it('answers HEAD with the headers only, and the connection stays usable', async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 })
      try {
        const head = await send(proxy.url, '/sized', { method: 'HEAD', headers: toLab, agent })
        expect(head.status).toBe(200)
        expect(head.headers['content-length']).toBe('1234')
        expect(head.body.length).toBe(0)
        const get = await send(proxy.url, '/sized', { headers: toLab, agent })
        expect(get.localPort).toBe(head.localPort)
        expect(get.body.toString()).toBe('x'.repeat(1234))
      } finally {
        agent.destroy()
      }
    })

    it.each([204, 304])('relays a %i without a body, and the connection stays usable', async (code) => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 })
      try {
        const first = await send(proxy.url, `/status?code=${code}`, { headers: toLab, agent })
        expect(first.status).toBe(code)
        expect(first.headers.etag).toBe('"v1"')
        expect(first.headers['x-bluegreen-color']).toBe('green')
        expect(first.body.length).toBe(0)
        const next = await send(proxy.url, '/sized', { headers: toLab, agent })
        expect(next.localPort).toBe(first.localPort)
        expect(next.body.toString()).toBe('x'.repeat(1234))
      } finally {
        agent.destroy()
      }
    })
  })

  it('reuses keep-alive connections to the upstream', async () => {
    await echoed(proxy.url, '/warm')
    const before = echoConnections
    for (let i = 0; i < 30; i++) await echoed(proxy.url, `/seq/${i}`)
    expect(echoConnections - before).toBeLessThanOrEqual(1)
  })
})
