import type { IncomingMessage } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeCa, type TestCa } from '../helpers/certificates.ts'
import { eventually } from '../helpers/eventually.ts'
import {
  ERROR,
  FLAG,
  FRAME,
  frame,
  headerBlock,
  rawHttp2,
  requestHeaders,
  rstStream,
} from '../helpers/h2-frames.ts'
import { echoUpstream, startProxy, type TestProxy, type TestServer, tempDir } from '../helpers/servers.ts'
import { http2Request, openHttp2 } from '../helpers/tls-clients.ts'

// The HTTP/2 limits and Node's own flood protections, shown with a raw client that sends what node:http2 never
// would. After each flood, a well-behaved client is still served.

const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
const SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

describe('HTTP/2 limits and flood protections', () => {
  let dir: { path: string; remove(): Promise<void> }
  let ca: TestCa
  let upstream: TestServer
  let proxy: TestProxy
  let port: number

  beforeAll(async () => {
    dir = await tempDir('bluegreen-h2-')
    ca = await makeCa(dir.path)
    const leaf = await ca.issue('leaf', ['localhost', '127.0.0.1'])
    upstream = await echoUpstream('blue')
    proxy = await startProxy(
      { blue: [upstream.url], green: [] },
      {
        tls: {
          cert: leaf.cert,
          key: leaf.key,
          http2: { maxConcurrentStreams: 100, maxHeaderListSize: 8192 },
        },
      },
    )
    port = proxy.app.proxyAddress.port
  })

  afterAll(async () => {
    await proxy?.close()
    await upstream?.close()
    await dir?.remove()
  })

  async function stillServes(): Promise<void> {
    const session = await openHttp2(port, ca.certPem)
    try {
      expect((await http2Request(session)).status).toBe(200)
    } finally {
      session.close()
    }
  }

  it('h2 to HTTP/1.1: a malformed request (framing, connection headers, CR/LF) never reaches the upstream whole', async () => {
    const complete: {
      case: string
      contentLength: string | undefined
      bodyLength: number
      names: string[]
    }[] = []
    const record = (req: IncomingMessage) => {
      let bodyLength = 0
      req.on('data', (chunk: Buffer) => {
        bodyLength += chunk.length
      })
      req.on('end', () =>
        complete.push({
          case: String(req.headers['x-case']),
          contentLength: req.headers['content-length'],
          bodyLength,
          names: Object.keys(req.headers),
        }),
      )
    }
    upstream.server.on('request', record)
    const post = (name: string, extra: [string, string][]) =>
      headerBlock([
        [':method', 'POST'],
        [':scheme', 'https'],
        [':authority', 'localhost'],
        [':path', '/'],
        ['x-case', name],
        ...extra,
      ])
    const cases: [string, [string, string][], Buffer | undefined][] = [
      ['longer-than-declared', [['content-length', '5']], Buffer.alloc(10, 'a')],
      ['shorter-than-declared', [['content-length', '20']], Buffer.alloc(10, 'b')],
      ['transfer-encoding', [['transfer-encoding', 'chunked']], Buffer.from('5\r\nhello\r\n0\r\n\r\n')],
      ['connection', [['connection', 'keep-alive']], undefined],
      ['te-gzip', [['te', 'gzip']], undefined],
      ['crlf', [['x-note', 'a\r\nx-injected: 1']], undefined],
      ['lf', [['x-note', 'a\nx-injected: 1']], undefined],
      ['nul', [['x-note', 'a\u0000b']], undefined],
      ['upper-case-name', [['X-Upper', '1']], undefined],
      // Which authority would the application see? Refused: one request names one.
      ['authority-and-host', [['host', 'evil.example']], undefined],
    ]
    const outcomes: Record<string, string> = {}
    try {
      for (const [name, extra, body] of [
        ...cases,
        ['well-formed', [['content-length', '4']], Buffer.from('good')],
      ] as typeof cases) {
        const client = await rawHttp2(port, ca.certPem)
        try {
          if (body === undefined)
            client.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, post(name, extra)))
          else {
            client.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, post(name, extra)))
            client.write(frame(FRAME.DATA, FLAG.END_STREAM, 1, body))
          }
          outcomes[name] = await eventually(
            () => {
              const reset = client.frames.find(
                (received) => received.stream === 1 && received.type === FRAME.RST_STREAM,
              )
              if (reset) return `reset ${reset.payload.readUInt32BE(0)}`
              if (client.frames.some((received) => received.stream === 1 && received.type === FRAME.HEADERS))
                return 'answered'
              const goaway = client.goaway()
              return goaway === undefined ? undefined : `goaway ${goaway}`
            },
            { timeout: 10_000, message: `an answer to ${name}` },
          )
        } finally {
          client.destroy()
        }
      }
      await eventually(() => complete.some((seen) => seen.case === 'well-formed'), {
        message: 'the well-formed one',
      })
      // Framing that disagrees, connection-specific fields, upper-case names: the stream (or the connection) is
      // reset by nghttp2 before any of it goes upstream.
      for (const name of [
        'longer-than-declared',
        'shorter-than-declared',
        'transfer-encoding',
        'connection',
        'te-gzip',
        'upper-case-name',
      ])
        expect(outcomes[name], name).toMatch(/^(reset|goaway) /)
      expect(outcomes['authority-and-host']).toBe('answered')
      // A field value with CR, LF or NUL is dropped by nghttp2 (never written upstream), the request served without it.
      const upstreamSaw = complete.filter((seen) => seen.case !== 'undefined')
      expect(upstreamSaw.map((seen) => seen.case).sort()).toEqual(['crlf', 'lf', 'nul', 'well-formed'])
      for (const seen of upstreamSaw) expect(seen.names, seen.case).not.toContain('x-injected')
      for (const seen of upstreamSaw) expect(seen.names, seen.case).not.toContain('x-note')
      expect(upstreamSaw.find((seen) => seen.case === 'well-formed')).toMatchObject({
        contentLength: '4',
        bodyLength: 4,
      })
    } finally {
      upstream.server.off('request', record)
    }
    await stillServes()
  })

  it('advertises its limits: concurrent streams and header list size', async () => {
    const client = await rawHttp2(port, ca.certPem)
    try {
      const settings = await eventually(() => (client.settings().size > 0 ? client.settings() : undefined), {
        message: "the server's SETTINGS",
      })
      expect(settings.get(SETTINGS_MAX_CONCURRENT_STREAMS)).toBe(100)
      expect(settings.get(SETTINGS_MAX_HEADER_LIST_SIZE)).toBe(8192)
    } finally {
      client.destroy()
    }
  })

  it('streams reset as soon as they are opened hold no upstream connection (more than the pool has)', async () => {
    const client = await rawHttp2(port, ca.certPem)
    const streams: Buffer[] = []
    for (let stream = 1; stream < 2 * 300; stream += 2) {
      streams.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, stream, requestHeaders()))
      streams.push(rstStream(stream))
    }
    client.write(Buffer.concat(streams))
    // A PING answered means the server has read every frame before it.
    client.write(frame(FRAME.PING, 0, 0, Buffer.alloc(8)))
    await eventually(() => client.frames.some((received) => received.type === FRAME.PING), {
      timeout: 15_000,
      message: 'the PING answer',
    })
    client.destroy()
    await stillServes()
  })

  it('rapid reset (CVE-2023-44487): a client that opens and resets streams in a flood is sent away', async () => {
    const client = await rawHttp2(port, ca.certPem)
    const flood: Buffer[] = []
    for (let stream = 1; stream < 2 * 5000; stream += 2) {
      flood.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, stream, requestHeaders()))
      flood.push(rstStream(stream))
    }
    client.write(Buffer.concat(flood))
    await eventually(() => client.goaway() !== undefined || client.closed(), {
      timeout: 15_000,
      message: 'a GOAWAY or the connection closed',
    })
    // nghttp2's stream reset rate limit (burst 1000, then 33 a second) ends the session.
    expect(client.goaway()).not.toBe(ERROR.NO_ERROR)
    client.destroy()
    // Every reset stream let go of its upstream request: the upstream connections are free for others.
    await stillServes()
  })

  it('CONTINUATION flood: endless header fragments without an end get the connection closed', async () => {
    const client = await rawHttp2(port, ca.certPem)
    client.write(frame(FRAME.HEADERS, 0, 1, requestHeaders()))
    const fragment = frame(FRAME.CONTINUATION, 0, 1, headerBlock([['x-flood', 'a'.repeat(100)]]))
    // Far past the header list limit, never with END_HEADERS: the server must not buffer it all.
    for (let sent = 0; sent < 2_000 && !client.closed(); sent++) client.write(fragment)
    await eventually(() => client.goaway() !== undefined || client.closed(), {
      timeout: 15_000,
      message: 'a GOAWAY or the connection closed',
    })
    client.destroy()
    await stillServes()
  })

  it('a header list over maxHeaderListSize is refused, and the connection serves the next stream', async () => {
    const session = await openHttp2(port, ca.certPem)
    try {
      // The limit holds from the client's SETTINGS acknowledgement on: a first request has made sure of it.
      expect((await http2Request(session)).status).toBe(200)
      const refused = await http2Request(session, { 'x-big': 'b'.repeat(9000) }).then(
        (answer) => answer.status,
        (error: NodeJS.ErrnoException) => error.code,
      )
      // Node answers 431 (or resets the stream): either way the upstream never sees it.
      expect([431, 'ERR_HTTP2_STREAM_ERROR']).toContain(refused)
      expect((await http2Request(session)).status).toBe(200)
    } finally {
      session.close()
    }
  })

  it('streams over maxConcurrentStreams are refused, not queued without bound', async () => {
    const client = await rawHttp2(port, ca.certPem)
    try {
      await eventually(() => client.settings().size > 0, { message: "the server's SETTINGS" })
      // 150 streams opened at once (HEADERS without END_STREAM keeps each open) against a limit of 100.
      const open: Buffer[] = []
      for (let stream = 1; stream <= 2 * 150; stream += 2)
        open.push(frame(FRAME.HEADERS, FLAG.END_HEADERS, stream, requestHeaders()))
      client.write(Buffer.concat(open))
      const resets = await eventually(
        () => {
          const count = client.frames.filter((received) => received.type === FRAME.RST_STREAM).length
          return count >= 50 ? count : client.goaway() !== undefined ? -1 : undefined
        },
        { timeout: 15_000, message: 'the streams over the limit to be refused' },
      )
      expect(resets === -1 || resets >= 50).toBe(true)
    } finally {
      client.destroy()
    }
    await stillServes()
  })
})
