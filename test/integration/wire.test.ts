import { once } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseRawResponse, rawRequest, slowClient } from '../helpers/raw.ts'
import { startProxy, startServer, type TestProxy, type TestServer } from '../helpers/servers.ts'

// What reaches the proxy on the wire that an ordinary HTTP client would not send: slow clients, upgrades to
// protocols other than WebSocket, CONNECT, transfer codings. Raw sockets, so the bytes are exactly these.

interface Seen {
  method: string
  url: string
  headers: IncomingMessage['headers']
  body: string
}

/**
 * An upstream that records what it received (the proxy's health checks, GET /, included) and answers with it as
 * JSON; /slow answers after `slowMs`.
 */
async function recordingUpstream(slowMs = 0) {
  const seen: Seen[] = []
  const server = await startServer(async (req: IncomingMessage, res: ServerResponse) => {
    let body = ''
    try {
      for await (const chunk of req) body += chunk
    } catch {
      return // the proxy gave up on this request (its client was cut): nothing to record
    }
    const entry = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body }
    seen.push(entry)
    const answer = () => {
      const json = JSON.stringify(entry)
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) })
      res.end(json)
    }
    if (req.url === '/slow') setTimeout(answer, slowMs)
    else answer()
  })
  return { server, seen }
}

function errorCode(body: string): string | undefined {
  return (JSON.parse(body) as { error?: { code?: string } }).error?.code
}

/** A raw connection that reads one response at a time (framed by Content-Length), for keep-alive checks. */
async function rawConnection(url: string) {
  const { hostname, port } = new URL(url)
  const socket: Socket = connect(Number(port), hostname)
  socket.on('error', () => {})
  await once(socket, 'connect')
  let buffered = ''
  let closed = false
  socket.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('latin1')
  })
  socket.once('close', () => {
    closed = true
  })
  const nextResponse = async (): Promise<{ status: number; head: string; body: string }> => {
    for (;;) {
      const end = buffered.indexOf('\r\n\r\n')
      if (end !== -1) {
        const head = buffered.slice(0, end)
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
        if (buffered.length >= end + 4 + length) {
          const body = buffered.slice(end + 4, end + 4 + length)
          buffered = buffered.slice(end + 4 + length)
          return { ...parseRawResponse(`${head}\r\n\r\n`), body }
        }
      }
      if (closed) throw new Error(`the connection closed before a whole response came: ${buffered}`)
      await new Promise((resolve) => socket.once('data', resolve).once('close', resolve))
    }
  }
  return {
    send: (request: string) => socket.write(Buffer.from(request, 'latin1')),
    nextResponse,
    closed: () => closed,
    close: () => socket.destroy(),
  }
}

describe('on the wire', () => {
  let upstream: Awaited<ReturnType<typeof recordingUpstream>>
  let other: TestServer
  let proxy: TestProxy

  beforeAll(async () => {
    upstream = await recordingUpstream(2_500)
    other = await startServer((_req, res) => res.end('green'))
    proxy = await startProxy(
      { blue: [upstream.server.url], green: [other.url] },
      { proxy: { timeouts: { clientHeader: '1s', clientRequest: '2s' } } },
    )
  })
  afterAll(async () => {
    await proxy?.close()
    await upstream?.server.close()
    await other?.close()
  })

  describe('slow clients', () => {
    // Node checks clientHeader and clientRequest on a timer of its own (connectionsCheckingInterval), 30 s by
    // default: a client set to 1 s would be cut at up to 31 s. These bounds (limit + 1.5 s) are far below that.

    it('cuts 20 slowloris clients (headers a byte every 100 ms) at clientHeader, each with a 408', async () => {
      const head = 'GET / HTTP/1.1\r\nHost: example.test\r\n'
      const trickle =
        'X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'.split('')
      const clients = await Promise.all(
        Array.from({ length: 20 }, () => slowClient(proxy.url, [head, ...trickle], { giveUpMs: 6_000 })),
      )
      for (const client of clients) {
        expect(client.closedAfterMs, 'the proxy closed the connection').toBeDefined()
        expect(client.closedAfterMs!).toBeGreaterThanOrEqual(900)
        expect(client.closedAfterMs!).toBeLessThan(2_500)
        expect(client.received).toMatch(/^HTTP\/1\.1 408 /)
      }
    })

    it('cuts a client that connects and sends nothing at clientHeader, with a 408', async () => {
      const client = await slowClient(proxy.url, [], { giveUpMs: 6_000 })
      expect(client.closedAfterMs).toBeDefined()
      expect(client.closedAfterMs!).toBeLessThan(2_500)
      expect(client.received).toMatch(/^HTTP\/1\.1 408 /)
    })

    it('cuts a client whose body trickles in at clientRequest, with a 408', async () => {
      const head = 'POST /upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: 1000\r\n\r\n'
      const client = await slowClient(proxy.url, [head, ...'x'.repeat(200).split('')], { giveUpMs: 6_000 })
      expect(client.closedAfterMs).toBeDefined()
      expect(client.closedAfterMs!).toBeGreaterThanOrEqual(1_900)
      expect(client.closedAfterMs!).toBeLessThan(3_500)
      expect(client.received).toMatch(/^HTTP\/1\.1 408 /)
      // The upstream never got a whole request to answer.
      expect(upstream.seen.filter((entry) => entry.url === '/upload')).toEqual([])
    })

    it('leaves alone a request whose answer takes longer than clientRequest, and an idle keep-alive connection', async () => {
      const connection = await rawConnection(proxy.url)
      connection.send('GET /slow HTTP/1.1\r\nHost: example.test\r\n\r\n')
      const slow = await connection.nextResponse()
      expect(slow.status).toBe(200)
      // Idle past clientRequest and clientHeader: idleness is clientIdle's business (65 s), not theirs.
      await new Promise((resolve) => setTimeout(resolve, 2_500))
      expect(connection.closed()).toBe(false)
      connection.send('GET /again HTTP/1.1\r\nHost: example.test\r\n\r\n')
      const again = await connection.nextResponse()
      expect(again.status, again.head).toBe(200)
      connection.close()
    })
  })

  describe('upgrades to anything but WebSocket', () => {
    // curl --http2 and Java's HttpClient offer h2c on a cleartext first request; some clients offer TLS/1.2. A
    // server may ignore an Upgrade (RFC 9110 7.8), as nginx does: the request is answered over HTTP/1.1.

    it('forwards an h2c upgrade as a plain GET, without Upgrade, HTTP2-Settings or their Connection tokens', async () => {
      const connection = await rawConnection(proxy.url)
      connection.send(
        'GET /h2c?x=1 HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade, HTTP2-Settings\r\n' +
          'Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nAccept: */*\r\n\r\n',
      )
      const answer = await connection.nextResponse()
      expect(answer.status, answer.head).toBe(200)
      expect(answer.head).not.toMatch(/\r\nupgrade:/i)
      expect(answer.head).toMatch(/\r\nx-bluegreen-color: blue/i)
      const seen = JSON.parse(answer.body) as Seen
      expect(seen.method).toBe('GET')
      expect(seen.url).toBe('/h2c?x=1')
      expect(seen.headers.upgrade).toBeUndefined()
      expect(seen.headers['http2-settings']).toBeUndefined()
      expect(seen.headers.connection ?? 'keep-alive').not.toMatch(/upgrade|http2-settings/i)
      expect(seen.headers.accept).toBe('*/*')
      // The connection is an ordinary keep-alive one afterwards.
      connection.send('GET /next HTTP/1.1\r\nHost: example.test\r\n\r\n')
      const next = await connection.nextResponse()
      expect(next.status).toBe(200)
      expect((JSON.parse(next.body) as Seen).url).toBe('/next')
      connection.close()
    })

    it('forwards a POST offering TLS/1.2 with its body intact, by length and chunked', async () => {
      const connection = await rawConnection(proxy.url)
      connection.send(
        'POST /tls HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\nUpgrade: TLS/1.2\r\n' +
          'Content-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world',
      )
      const byLength = await connection.nextResponse()
      expect(byLength.status, byLength.head).toBe(200)
      expect(JSON.parse(byLength.body)).toMatchObject({ method: 'POST', url: '/tls', body: 'hello world' })
      connection.send(
        'POST /tls-chunked HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n' +
          'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n',
      )
      const chunked = await connection.nextResponse()
      expect(chunked.status, chunked.head).toBe(200)
      const seen = JSON.parse(chunked.body) as Seen
      expect(seen).toMatchObject({ method: 'POST', url: '/tls-chunked', body: 'hello world' })
      expect(seen.headers.upgrade).toBeUndefined()
      connection.close()
    })
  })

  describe('CONNECT', () => {
    it('answers 405 with its code and an Allow header, and keeps serving', async () => {
      const raw = await rawRequest(
        proxy.url,
        'CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n',
      )
      const answer = parseRawResponse(raw)
      expect(answer.status, raw).toBe(405)
      expect(errorCode(answer.body)).toBe('BG_METHOD_NOT_ALLOWED')
      expect(answer.head).toMatch(/\r\nallow: GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH(\r\n|$)/i)
      expect(answer.head).toMatch(/\r\nconnection: close(\r\n|$)/i)
      expect((await fetch(`${proxy.url}/after-connect`)).status).toBe(200)
    })
  })

  describe('transfer codings', () => {
    it.each(['gzip, chunked', 'x-custom, chunked', 'deflate,chunked'])(
      'answers a request body coded "%s" with 501 and closes the connection, without forwarding it',
      async (coding) => {
        // No "Connection: close": the proxy must close by itself, since the body cannot be framed.
        const raw = await rawRequest(
          proxy.url,
          `POST /coded HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: ${coding}\r\n\r\n` +
            '5\r\nhello\r\n0\r\n\r\n',
        )
        const answer = parseRawResponse(raw)
        expect(answer.status, raw).toBe(501)
        expect(errorCode(answer.body)).toBe('BG_UNSUPPORTED_TRANSFER_CODING')
        expect(answer.head).toMatch(/\r\nconnection: close(\r\n|$)/i)
        expect(upstream.seen.filter((entry) => entry.url === '/coded')).toEqual([])
      },
    )

    it('forwards chunked, however it is spelled, as before', async () => {
      for (const coding of ['chunked', 'Chunked', ' chunked ']) {
        const raw = await rawRequest(
          proxy.url,
          `POST /chunked HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\nTransfer-Encoding: ${coding}\r\n\r\n` +
            '5\r\nhello\r\n0\r\n\r\n',
        )
        const answer = parseRawResponse(raw)
        expect(answer.status, raw).toBe(200)
        expect(JSON.parse(answer.body)).toMatchObject({ url: '/chunked', body: 'hello' })
      }
    })
  })
})
