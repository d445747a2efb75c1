import { type IncomingMessage, request } from 'node:http'
import type { Duplex } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminGet } from '../helpers/admin.ts'
import { type CertificateFiles, makeCa, type TestCa } from '../helpers/certificates.ts'
import { eventually } from '../helpers/eventually.ts'
import { scrapeMetrics } from '../helpers/metrics.ts'
import {
  echoHandler,
  startHttpsServer,
  startProxy,
  type TestProxy,
  type TestServer,
  tempDir,
} from '../helpers/servers.ts'
import { upgrade } from '../helpers/websocket.ts'

interface Echo {
  name: string
  headers: Record<string, string>
}

interface HealthOfUpstream {
  url: string
  lastCheck: { up: boolean; detail: string } | null
}

/** Health checks that record every probe but never take the upstream out, nor does outlier detection. */
const KEEP_IN = {
  healthCheck: { interval: '100ms', unhealthyThreshold: 100 },
  outlier: { consecutiveFailures: 0 },
}

/** Answers an upgrade with a 101 naming itself, and writes nothing more. */
function acceptUpgrades(server: TestServer, name: string): void {
  server.server.on('upgrade', (_req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => {})
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: unchecked\r\nX-Upstream: ${name}\r\n\r\n`,
    )
  })
}

describe('TLS to upstreams, per pool', () => {
  let dir: { path: string; remove(): Promise<void> }
  let ca: TestCa
  let server: CertificateFiles
  let client: CertificateFiles
  /** An upstream whose certificate a private CA signed, for the IP it listens on and a DNS name. */
  let privateUpstream: TestServer
  /** The same, but it asks every client for a certificate signed by the CA (mTLS). */
  let mutualUpstream: TestServer

  beforeAll(async () => {
    dir = await tempDir('bluegreen-upstream-tls-')
    ca = await makeCa(dir.path, 'private upstream CA')
    server = await ca.issue('upstream', ['127.0.0.1', 'upstream.internal'])
    client = await ca.issue('proxy-client', ['bluegreen-proxy'], { clientAuth: true })
    privateUpstream = await startHttpsServer(echoHandler('private'), {
      cert: server.certPem,
      key: server.keyPem,
    })
    acceptUpgrades(privateUpstream, 'private')
    mutualUpstream = await startHttpsServer(
      (req, res) => {
        const peer = (req.socket as TLSSocket).getPeerCertificate()
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ name: 'mutual', headers: { 'client-cn': peer.subject?.CN ?? '' } }))
      },
      // TLS 1.2: a Node server refuses a TLS 1.3 client without a certificate by closing the connection after the
      // handshake, with no alert to tell it from a reset; over 1.2 the handshake itself fails, with an alert.
      {
        cert: server.certPem,
        key: server.keyPem,
        ca: ca.certPem,
        requestCert: true,
        rejectUnauthorized: true,
        maxVersion: 'TLSv1.2',
      },
    )
  })

  afterAll(async () => {
    await privateUpstream?.close()
    await mutualUpstream?.close()
    await dir?.remove()
  })

  describe('a private CA', () => {
    let proxy: TestProxy

    beforeAll(async () => {
      proxy = await startProxy(
        { blue: [privateUpstream.url], green: [privateUpstream.url] },
        {
          pools: {
            // blue trusts the CA; green has only the system's CAs.
            blue: { upstreams: [privateUpstream.url], tls: { ca: ca.cert }, ...KEEP_IN },
            green: { upstreams: [privateUpstream.url], ...KEEP_IN },
          },
          rollback: { enabled: false },
          routing: { sticky: { mode: 'none' }, preview: {} },
        },
      )
    })

    afterAll(async () => {
      await proxy?.close()
    })

    it('works with `ca`: requests, health checks and WebSockets', async () => {
      const response = await fetch(`${proxy.url}/`)
      expect(response.status).toBe(200)
      expect(((await response.json()) as Echo).name).toBe('private')
      const health = await eventually(
        async () => {
          const state = await adminGet<{ replica: { health: Record<string, HealthOfUpstream[]> } }>(
            proxy.admin,
            '/state',
          )
          return state.body.replica.health.blue?.[0]?.lastCheck ?? undefined
        },
        { message: 'a health check of blue' },
      )
      expect(health).toMatchObject({ up: true, detail: 'HTTP 200' })
      const websocket = await upgrade(proxy.url, '/ws')
      expect(websocket.kind).toBe('upgrade')
      if (websocket.kind === 'upgrade') {
        expect(websocket.response.headers['x-upstream']).toBe('private')
        websocket.socket.destroy()
      }
    })

    it("checks an IP-named upstream's certificate against its address, whatever Host the client sends", async () => {
      // With preserveHost (the default) undici sends the client's Host as the SNI name; the certificate names the
      // upstream's IP, not that name, and is still the upstream's. Before the fix: 502 (tls), altname invalid.
      const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request(`${proxy.url}/`, { headers: { host: 'shop.example.com' } }, (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (chunk: string) => {
            body += chunk
          })
          res.once('end', () => resolve({ status: res.statusCode ?? 0, body }))
        })
        req.once('error', reject)
        req.end()
      })
      expect(answer.status, answer.body).toBe(200)
      expect((JSON.parse(answer.body) as Echo).name).toBe('private')
    })

    it('fails clearly without it: 502 naming tls, a tls reason in the metric and in the health details', async () => {
      const response = await fetch(`${proxy.url}/`, { headers: { 'x-bluegreen-preview': 'green' } })
      expect(response.status).toBe(502)
      const body = (await response.json()) as { error: { code: string; message: string } }
      expect(body.error.code).toBe('BG_UPSTREAM_UNREACHABLE')
      expect(body.error.message).toContain('(tls)')
      const metrics = await scrapeMetrics(proxy.admin)
      expect(
        metrics.get('bluegreen_upstream_errors_total{color="green",reason="tls"}'),
      ).toBeGreaterThanOrEqual(1)
      const health = await eventually(
        async () => {
          const state = await adminGet<{ replica: { health: Record<string, HealthOfUpstream[]> } }>(
            proxy.admin,
            '/state',
          )
          return state.body.replica.health.green?.[0]?.lastCheck ?? undefined
        },
        { message: 'a health check of green' },
      )
      expect(health.up).toBe(false)
      expect(health.detail).toMatch(/^tls: UNABLE_TO_VERIFY_LEAF_SIGNATURE/)
      const websocket = await upgrade(proxy.url, '/ws', { 'x-bluegreen-preview': 'green' })
      expect(websocket.kind).toBe('response')
      if (websocket.kind === 'response') {
        expect(websocket.response.statusCode).toBe(502)
        expect(websocket.body).toContain('(tls)')
      }
    })
  })

  describe('servername and mTLS', () => {
    let proxy: TestProxy

    beforeAll(async () => {
      proxy = await startProxy(
        { blue: [mutualUpstream.url], green: [mutualUpstream.url] },
        {
          pools: {
            // The upstream's certificate names upstream.internal; the client's Host names something else.
            blue: {
              upstreams: [mutualUpstream.url],
              tls: { ca: ca.cert, servername: 'upstream.internal', cert: client.cert, key: client.key },
              ...KEEP_IN,
            },
            green: { upstreams: [mutualUpstream.url], tls: { ca: ca.cert }, ...KEEP_IN },
          },
          rollback: { enabled: false },
          routing: { sticky: { mode: 'none' }, preview: {} },
        },
      )
    })

    afterAll(async () => {
      await proxy?.close()
    })

    it('a pool with a client certificate reaches an upstream that requires one', async () => {
      const response = await fetch(`${proxy.url}/`, { headers: { host: 'shop.example.com' } })
      expect(response.status).toBe(200)
      expect(((await response.json()) as Echo).headers['client-cn']).toBe('bluegreen-proxy')
    })

    it('a pool without one is refused by that upstream, and says tls', async () => {
      const response = await fetch(`${proxy.url}/`, { headers: { 'x-bluegreen-preview': 'green' } })
      expect(response.status).toBe(502)
      expect(((await response.json()) as { error: { message: string } }).error.message).toContain('(tls)')
      const metrics = await scrapeMetrics(proxy.admin)
      expect(
        metrics.get('bluegreen_upstream_errors_total{color="green",reason="tls"}'),
      ).toBeGreaterThanOrEqual(1)
    })
  })
})
