import { copyFile, rename, writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import { connect as connectTls } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminPost } from '../helpers/admin.ts'
import { type CertificateFiles, makeCa, type TestCa } from '../helpers/certificates.ts'
import { eventually } from '../helpers/eventually.ts'
import {
  echoHandler,
  echoUpstream,
  freePort,
  startProxy,
  startServer,
  type TestProxy,
  type TestServer,
  tempDir,
} from '../helpers/servers.ts'
import {
  capturingLogger,
  curl,
  http2Request,
  httpsGet,
  openHttp2,
  peerCertificate,
} from '../helpers/tls-clients.ts'
import { wsEchoUpstream } from '../helpers/websocket.ts'

interface Echo {
  name: string
  method: string
  url: string
  headers: Record<string, string>
  bodyLength: number
}

describe('TLS and HTTP/2 on the public listener', () => {
  let dir: { path: string; remove(): Promise<void> }
  let ca: TestCa
  let first: CertificateFiles
  let other: CertificateFiles
  let wildcard: CertificateFiles
  /** The files the config names: a renewal replaces them. */
  let live: { cert: string; key: string }
  let blue: TestServer
  let green: TestServer
  let proxy: TestProxy
  let port: number
  let redirectPort: number
  const log = capturingLogger()

  beforeAll(async () => {
    dir = await tempDir('bluegreen-tls-')
    ca = await makeCa(dir.path)
    first = await ca.issue('first', ['localhost', '127.0.0.1'])
    other = await ca.issue('other', ['other.test'])
    wildcard = await ca.issue('wildcard', ['*.wild.test'])
    live = { cert: join(dir.path, 'live.pem'), key: join(dir.path, 'live.key') }
    await copyFile(first.cert, live.cert)
    await copyFile(first.key, live.key)
    blue = await wsEchoUpstream('blue', { onRequest: echoHandler('blue') })
    green = await echoUpstream('green')
    redirectPort = await freePort()
    proxy = await startProxy(
      { blue: [blue.url], green: [green.url] },
      {
        tls: {
          cert: live.cert,
          key: live.key,
          sni: [
            { names: ['other.test'], cert: other.cert, key: other.key },
            { names: ['*.wild.test'], cert: wildcard.cert, key: wildcard.key },
          ],
          watchInterval: '50ms',
          redirectFrom: `127.0.0.1:${redirectPort}`,
        },
        routing: { sticky: { mode: 'none' } },
        rollback: { enabled: false },
      },
      log.logger,
    )
    port = proxy.app.proxyAddress.port
  })

  afterAll(async () => {
    await proxy?.close()
    await blue?.close()
    await green?.close()
    await dir?.remove()
  })

  it('curl --http2 --cacert gets the active color over h2, and X-Forwarded-Proto says https', async () => {
    const answer = await curl([
      '--http2',
      '--cacert',
      ca.cert,
      '--resolve',
      `localhost:${port}:127.0.0.1`,
      '-D',
      '-',
      '-w',
      '\nversion=%{http_version}',
      `https://localhost:${port}/curl`,
    ])
    expect(answer.stderr).toBe('')
    expect(answer.stdout).toMatch(/^HTTP\/2 200/)
    expect(answer.stdout).toMatch(/x-bluegreen-color: blue/)
    expect(answer.stdout).toMatch(/version=2$/)
    const echo = JSON.parse(answer.stdout.split('\r\n\r\n')[1]!.split('\nversion=')[0]!) as Echo
    expect(echo.headers['x-forwarded-proto']).toBe('https')
    // The :authority became the Host (preserveHost), and no pseudo-header reached the upstream.
    expect(echo.headers.host).toBe(`localhost:${port}`)
    expect(Object.keys(echo.headers).some((name) => name.startsWith(':'))).toBe(false)
  })

  it('a client without h2 in ALPN, or with no ALPN, is served HTTP/1.1 over TLS (curl --http1.1, node:https)', async () => {
    const answer = await curl([
      '--http1.1',
      '--cacert',
      ca.cert,
      '--resolve',
      `localhost:${port}:127.0.0.1`,
      '-o',
      '/dev/null',
      '-w',
      '%{http_version} %{http_code}',
      `https://localhost:${port}/`,
    ])
    expect(answer.stdout).toBe('1.1 200')
    // node:https offers no ALPN at all, as older clients do.
    const https = await httpsGet(port, ca.certPem, '/node')
    expect(https.alpn).toBe(false)
    expect(https.headers['x-bluegreen-color']).toBe('blue')
    expect((JSON.parse(https.body) as Echo).headers['x-forwarded-proto']).toBe('https')
  })

  it('a Node HTTP/2 client is routed like any other: body without content-length, cookies joined', async () => {
    const session = await openHttp2(port, ca.certPem)
    try {
      const get = await http2Request(session, { ':path': '/h2?q=1', cookie: ['a=1', 'b=2'] })
      expect(get.status).toBe(200)
      expect(get.headers['x-bluegreen-color']).toBe('blue')
      const echo = JSON.parse(get.body) as Echo
      expect(echo.url).toBe('/h2?q=1')
      // HTTP/2 may split cookies over several fields; HTTP/1.1 upstreams expect one header.
      expect(echo.headers.cookie).toBe('a=1; b=2')
      const post = await http2Request(session, { ':method': 'POST', ':path': '/upload' }, [
        Buffer.alloc(1000, 1),
        Buffer.alloc(500, 2),
      ])
      expect(post.status).toBe(200)
      expect((JSON.parse(post.body) as Echo).bodyLength).toBe(1500)
      // Hop-by-hop headers never go out on h2 (Node would refuse to send them; the upstream's are dropped).
      expect(get.headers.connection).toBeUndefined()
    } finally {
      session.close()
    }
  })

  it('a switch reaches the very next stream of an open HTTP/2 connection', async () => {
    const session = await openHttp2(port, ca.certPem)
    try {
      expect((await http2Request(session)).headers['x-bluegreen-color']).toBe('blue')
      const switched = await adminPost(proxy.admin, '/switch', { to: 'green' })
      expect(switched.status).toBe(200)
      const next = await http2Request(session)
      expect(next.headers['x-bluegreen-color']).toBe('green')
      expect((JSON.parse(next.body) as Echo).name).toBe('green')
      expect(session.closed || session.destroyed).toBe(false)
    } finally {
      session.close()
      await adminPost(proxy.admin, '/switch', { to: 'blue' })
    }
  })

  it('CONNECT on HTTP/2 is answered 405, as on HTTP/1.1', async () => {
    const session = await openHttp2(port, ca.certPem)
    try {
      const answer = await http2Request(session, { ':method': 'CONNECT', ':authority': 'example.com:443' })
      expect(answer.status).toBe(405)
      expect(answer.headers.allow).toContain('GET')
      expect(JSON.parse(answer.body)).toMatchObject({ error: { code: 'BG_METHOD_NOT_ALLOWED' } })
      expect((await http2Request(session)).status).toBe(200)
    } finally {
      session.close()
    }
  })

  it('SNI picks the certificate: an exact name, a wildcard, and the default for any other', async () => {
    expect((await peerCertificate(port, ca.certPem, 'other.test')).subject.CN).toBe('other.test')
    expect((await peerCertificate(port, ca.certPem, 'a.wild.test')).subject.CN).toBe('*.wild.test')
    expect((await peerCertificate(port, ca.certPem, 'localhost')).subject.CN).toBe('localhost')
    // SNI contexts negotiate h2 too.
    const session = await openHttp2(port, ca.certPem, 'other.test')
    try {
      expect(session.alpnProtocol).toBe('h2')
      expect((await http2Request(session)).status).toBe(200)
    } finally {
      session.close()
    }
  })

  it('TLS 1.1 and older are refused (minVersion TLS 1.2 by default)', async () => {
    const error = await new Promise<Error>((resolve) => {
      const socket = connectTls({
        host: '127.0.0.1',
        port,
        ca: ca.certPem,
        servername: 'localhost',
        minVersion: 'TLSv1',
        maxVersion: 'TLSv1.1',
      })
      socket.once('error', resolve)
      socket.once('secureConnect', () => resolve(new Error('connected')))
    })
    expect(error.message).not.toBe('connected')
  })

  it('WebSockets stay on HTTP/1.1 over TLS', async () => {
    const socket = connectTls({
      host: '127.0.0.1',
      port,
      ca: ca.certPem,
      servername: 'localhost',
      ALPNProtocols: ['http/1.1'],
    })
    let received = ''
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => {
      received += chunk
    })
    await new Promise((resolve) => socket.once('secureConnect', resolve))
    socket.write(
      'GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    )
    await eventually(() => received.includes('\r\n\r\n'), { message: 'the handshake answer' })
    socket.destroy()
    expect(received).toMatch(/^HTTP\/1\.1 101/)
    expect(received.toLowerCase()).toContain('x-bluegreen-color: blue')
  })

  it('the redirect listener sends plain HTTP to the same host and path over https, with a 308', async () => {
    const answer = await new Promise<{ status: number; location: string | undefined }>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: redirectPort,
          method: 'POST',
          path: '/a/b?c=d',
          headers: { host: 'shop.test:80' },
        },
        (res) => {
          res.resume()
          resolve({ status: res.statusCode ?? 0, location: res.headers.location })
        },
      )
      req.once('error', reject)
      req.end('body')
    })
    expect(answer).toEqual({ status: 308, location: `https://shop.test:${port}/a/b?c=d` })
  })

  it('a renewed certificate on disk serves new connections; open ones go on with theirs', async () => {
    const session = await openHttp2(port, ca.certPem)
    const before = await peerCertificate(port, ca.certPem, 'localhost')
    expect((await http2Request(session)).status).toBe(200)
    const renewed = await ca.issue('renewed', ['localhost', '127.0.0.1'])
    // As certbot and cert-manager do: the new files are moved into place.
    await copyFile(renewed.cert, `${live.cert}.new`)
    await copyFile(renewed.key, `${live.key}.new`)
    await rename(`${live.key}.new`, live.key)
    await rename(`${live.cert}.new`, live.cert)
    const after = await eventually(
      async () => {
        const seen = await peerCertificate(port, ca.certPem, 'localhost')
        return seen.serialNumber !== before.serialNumber ? seen : undefined
      },
      { timeout: 10_000, message: 'the renewed certificate to be served' },
    )
    expect(after.fingerprint256).not.toBe(before.fingerprint256)
    // The connection opened before the renewal is still open and still served.
    expect(session.closed || session.destroyed).toBe(false)
    expect((await http2Request(session)).status).toBe(200)
    session.close()

    // A broken file is refused whole: the renewed certificate stays, and the log says which file and why.
    await writeFile(live.cert, 'not a certificate\n')
    await eventually(
      () =>
        log.lines.find(
          (line) => String(line.msg).includes('cannot be used') && String(line.problem).includes(live.cert),
        ),
      { timeout: 10_000, message: 'the refused certificate to be logged' },
    )
    const still = await peerCertificate(port, ca.certPem, 'localhost')
    expect(still.serialNumber).toBe(after.serialNumber)
    expect((await httpsGet(port, ca.certPem)).status).toBe(200)
  })
})

describe('HTTP/2 connections: idle ones close, and a shutdown lets streams finish', () => {
  let dir: { path: string; remove(): Promise<void> }
  let ca: TestCa
  let slow: TestServer
  let proxy: TestProxy
  let port: number

  beforeAll(async () => {
    dir = await tempDir('bluegreen-h2-close-')
    ca = await makeCa(dir.path)
    const leaf = await ca.issue('leaf', ['localhost', '127.0.0.1'])
    slow = await startServer((req, res) => {
      const delay = req.url === '/slow' ? 700 : 0
      setTimeout(() => res.end(`done ${req.url}`), delay)
    })
    proxy = await startProxy(
      { blue: [slow.url], green: [] },
      { tls: { cert: leaf.cert, key: leaf.key }, proxy: { timeouts: { clientIdle: '300ms' } } },
    )
    port = proxy.app.proxyAddress.port
  })

  afterAll(async () => {
    await proxy?.close()
    await slow?.close()
    await dir?.remove()
  })

  it('an HTTP/2 connection idle for clientIdle is closed; one with a stream in flight is not', async () => {
    const session = await openHttp2(port, ca.certPem)
    // A stream longer than clientIdle keeps the connection.
    expect((await http2Request(session, { ':path': '/slow' })).body).toBe('done /slow')
    await eventually(() => session.closed || session.destroyed, {
      timeout: 10_000,
      message: 'the idle connection to be closed',
    })
  })

  it('at shutdown an open HTTP/2 connection gets a GOAWAY and its stream in flight finishes', async () => {
    const session = await openHttp2(port, ca.certPem)
    let goaway = false
    session.once('goaway', () => {
      goaway = true
    })
    const inFlight = http2Request(session, { ':path': '/slow' })
    await eventually(() => proxy.app.snapshot() !== undefined)
    await new Promise((resolve) => setTimeout(resolve, 100))
    const closed = proxy.app.close()
    expect((await inFlight).body).toBe('done /slow')
    await closed
    expect(goaway).toBe(true)
  })
})

describe('tls.http2.enabled: false', () => {
  let dir: { path: string; remove(): Promise<void> }
  let ca: TestCa
  let upstream: TestServer
  let proxy: TestProxy

  beforeAll(async () => {
    dir = await tempDir('bluegreen-https-only-')
    ca = await makeCa(dir.path)
    const leaf = await ca.issue('leaf', ['localhost', '127.0.0.1'])
    upstream = await echoUpstream('blue')
    proxy = await startProxy(
      { blue: [upstream.url], green: [] },
      { tls: { cert: leaf.cert, key: leaf.key, http2: { enabled: false } } },
    )
  })

  afterAll(async () => {
    await proxy?.close()
    await upstream?.close()
    await dir?.remove()
  })

  it('serves HTTPS with HTTP/1.1 only: curl --http2 gets 1.1', async () => {
    const port = proxy.app.proxyAddress.port
    const answer = await curl([
      '--http2',
      '--cacert',
      ca.cert,
      '--resolve',
      `localhost:${port}:127.0.0.1`,
      '-o',
      '/dev/null',
      '-w',
      '%{http_version} %{http_code}',
      `https://localhost:${port}/`,
    ])
    expect(answer.stdout).toBe('1.1 200')
  })
})
