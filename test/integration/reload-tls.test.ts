import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminPost, errorCode } from '../helpers/admin.ts'
import { type CertificateFiles, makeCa, type TestCa } from '../helpers/certificates.ts'
import { eventually } from '../helpers/eventually.ts'
import {
  type ChildProxy,
  echoHandler,
  spawnProxy,
  startHttpsServer,
  type TestServer,
  tempDir,
  writeConfig,
} from '../helpers/servers.ts'
import { http2Request, httpsGet, openHttp2, peerCertificate } from '../helpers/tls-clients.ts'

// A config reload of the TLS settings (README "Reloading the configuration", "TLS and HTTP/2"): a pool's upstream
// TLS options and the listener's certificates apply without a restart; the listener's HTTP/2 settings need one.
// The proxy runs as a child process (`bluegreen serve`) over real TLS, with certificates made by openssl.

interface ReloadAnswer {
  result: string
  changed: string[]
  error?: { code: string; message: string; details?: { needsRestart?: string[] } }
}

describe('reloading TLS settings', () => {
  let dir: { path: string; remove(): Promise<void> }
  let upstreamCa: TestCa
  let listenerCa: TestCa
  let first: CertificateFiles
  let second: CertificateFiles
  let upstream: TestServer
  let proxy: ChildProxy
  let config: Record<string, unknown>
  let file: string
  let port: number

  const write = (changes: Record<string, unknown>) => {
    config = { ...config, ...changes }
    return writeConfig(dir.path, config, 'config.json')
  }
  const reload = () => adminPost<ReloadAnswer>(proxy.admin, '/reload', {})

  beforeAll(async () => {
    dir = await tempDir('bluegreen-reload-tls-')
    upstreamCa = await makeCa(dir.path, 'upstream CA')
    listenerCa = await makeCa(dir.path, 'listener CA')
    const upstreamCert = await upstreamCa.issue('upstream', ['127.0.0.1'])
    first = await listenerCa.issue('first', ['localhost'])
    second = await listenerCa.issue('second', ['localhost'])
    upstream = await startHttpsServer(echoHandler('private'), {
      cert: upstreamCert.certPem,
      key: upstreamCert.keyPem,
    })
    config = {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      tls: { cert: first.cert, key: first.key },
      // Blue's upstream has a certificate only the upstream CA signed, and the pool does not trust it yet.
      pools: { blue: { upstreams: [upstream.url] }, green: { upstreams: [upstream.url] } },
      state: { path: join(dir.path, 'state.json') },
      rollback: { enabled: false },
    }
    file = await write({})
    proxy = await spawnProxy(file)
    port = Number(new URL(proxy.url).port)
  })

  afterAll(async () => {
    await proxy?.stop('SIGKILL')
    await upstream?.close()
    await dir?.remove()
  })

  it("applies a pool's new `tls.ca`: an upstream it could not verify is reached after the reload", async () => {
    const before = await httpsGet(port, listenerCa.certPem)
    expect(before.status).toBe(502)
    expect(before.body).toMatch(/tls/)

    await write({
      pools: {
        blue: { upstreams: [upstream.url], tls: { ca: upstreamCa.cert } },
        green: { upstreams: [upstream.url], tls: { ca: upstreamCa.cert } },
      },
    })
    const answer = await reload()
    expect(answer.status).toBe(200)
    expect(answer.body.changed).toEqual(['pools.blue.tls', 'pools.green.tls'])
    await eventually(async () => {
      const after = await httpsGet(port, listenerCa.certPem)
      expect(after.status).toBe(200)
      expect(JSON.parse(after.body).name).toBe('private')
      return true
    })
  })

  it('serves new certificates to new handshakes, and an open HTTP/2 connection keeps working', async () => {
    const open = await openHttp2(port, listenerCa.certPem)
    try {
      const firstAnswer = await http2Request(open)
      expect(firstAnswer.status, firstAnswer.body).toBe(200)
      const before = await peerCertificate(port, listenerCa.certPem, 'localhost')

      await write({ tls: { cert: second.cert, key: second.key } })
      const answer = await reload()
      expect(answer.status).toBe(200)
      expect(answer.body.changed).toEqual(['tls.cert', 'tls.key'])

      await eventually(async () => {
        const after = await peerCertificate(port, listenerCa.certPem, 'localhost')
        expect(after.fingerprint256).not.toBe(before.fingerprint256)
        return true
      })
      // The connection made before the reload goes on, on its own certificate.
      expect((await http2Request(open)).status).toBe(200)
    } finally {
      open.close()
    }
  })

  it("refuses a change of the listener's HTTP/2 settings as needing a restart, and applies nothing of the file", async () => {
    const before = await peerCertificate(port, listenerCa.certPem, 'localhost')
    await write({
      tls: { cert: first.cert, key: first.key, http2: { maxConcurrentStreams: 16 } },
    })
    const answer = await reload()
    expect(answer.status).toBe(422)
    expect(errorCode(answer)).toBe('BG_RELOAD_REFUSED')
    expect(answer.body.error?.message).toMatch(/tls\.http2\.maxConcurrentStreams/)
    // The certificate change in the same file was not applied either.
    const after = await peerCertificate(port, listenerCa.certPem, 'localhost')
    expect(after.fingerprint256).toBe(before.fingerprint256)
  })
})
