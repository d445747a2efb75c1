import { copyFile, rename } from 'node:fs/promises'
import type { ClientHttp2Session } from 'node:http2'
import { join } from 'node:path'
import type { TLSSocket } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminPost } from '../helpers/admin.ts'
import { type CertificateFiles, makeCa, type TestCa } from '../helpers/certificates.ts'
import { type Cluster, spawnCluster } from '../helpers/cluster.ts'
import { eventually } from '../helpers/eventually.ts'
import { echoUpstream, type TestServer, tempDir, writeConfig } from '../helpers/servers.ts'
import { curl, http2Request, openHttp2 } from '../helpers/tls-clients.ts'

// TLS and HTTP/2 with `bluegreen serve --workers 2` (README "TLS and HTTP/2", "Workers"): every worker terminates
// TLS, serves HTTP/2, follows a switch on its open connections, and picks up a renewed certificate or a reloaded
// `tls.cert`. The primary deals connections out in turn, so connections opened one after the other reach both
// workers; the access log says which worker (pid) served each request.

/** An HTTP/2 connection, the worker that serves it and the serial number of the certificate it was shown. */
interface Connection {
  session: ClientHttp2Session
  pid: number
  serial: string
}

describe('TLS and HTTP/2 with bluegreen serve --workers 2', { timeout: 60_000 }, () => {
  let dir: { path: string; remove(): Promise<void> }
  let ca: TestCa
  let first: CertificateFiles
  let blue: TestServer
  let green: TestServer
  let cluster: Cluster
  let port: number
  let file: string
  /** The files the config names at first: a renewal replaces them. */
  let live: { cert: string; key: string }
  let config: Record<string, unknown>
  let requestCount = 0
  const open: ClientHttp2Session[] = []

  const write = (changes: Record<string, unknown>) => {
    config = { ...config, ...changes }
    return writeConfig(dir.path, config, 'config.json')
  }

  /** The pid of the worker that served `path` (its access log line), once it is logged. */
  const servedBy = (path: string) =>
    eventually(
      () => {
        const line = cluster.lines().find((entry) => entry.part === 'access' && entry.path === path)
        return line !== undefined && (line.pid as number)
      },
      { timeout: 10_000, message: `the access log line of ${path}` },
    )

  /** A new HTTP/2 connection, asked one request to learn which worker holds it. */
  const connect = async (): Promise<Connection> => {
    const session = await openHttp2(port, ca.certPem)
    open.push(session)
    const serial = (session.socket as TLSSocket).getPeerCertificate().serialNumber
    const path = `/connection-${++requestCount}`
    const answer = await http2Request(session, { ':path': path })
    expect(answer.status).toBe(200)
    return { session, pid: await servedBy(path), serial }
  }

  /** New connections until both workers hold one; the latest of each. */
  const oneOnEachWorker = async (): Promise<Map<number, Connection>> => {
    const byWorker = new Map<number, Connection>()
    return eventually(
      async () => {
        const connection = await connect()
        byWorker.get(connection.pid)?.session.close()
        byWorker.set(connection.pid, connection)
        return byWorker.size >= 2 && byWorker
      },
      { timeout: 15_000, message: 'an HTTP/2 connection on each worker' },
    )
  }

  /** The certificate serial `count` new connections in a row are shown, by worker. */
  const serialsOfNewConnections = async (count: number): Promise<Map<number, Set<string>>> => {
    const seen = new Map<number, Set<string>>()
    for (let i = 0; i < count; i++) {
      const connection = await connect()
      connection.session.close()
      seen.set(connection.pid, (seen.get(connection.pid) ?? new Set()).add(connection.serial))
    }
    return seen
  }

  beforeAll(async () => {
    dir = await tempDir('bluegreen-tls-workers-')
    ca = await makeCa(dir.path)
    first = await ca.issue('first', ['localhost', '127.0.0.1'])
    live = { cert: join(dir.path, 'live.pem'), key: join(dir.path, 'live.key') }
    await copyFile(first.cert, live.cert)
    await copyFile(first.key, live.key)
    blue = await echoUpstream('blue')
    green = await echoUpstream('green')
    config = {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      tls: { cert: live.cert, key: live.key, watchInterval: '50ms' },
      pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
      routing: { sticky: { mode: 'none' } },
      state: { path: join(dir.path, 'state.json') },
      rollback: { enabled: false },
      log: { access: true },
    }
    file = await write({})
    cluster = await spawnCluster(file, 2)
    port = Number(new URL(cluster.url).port)
  }, 60_000)

  afterAll(async () => {
    for (const session of open) session.destroy()
    if (cluster && cluster.child.exitCode === null) {
      cluster.child.kill('SIGKILL')
      await cluster.exited
    }
    await blue?.close()
    await green?.close()
    await dir?.remove()
  })

  it('HTTP/2 connections (curl --http2 and Node sessions) are answered by both workers', async () => {
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
      `https://localhost:${port}/curl`,
    ])
    expect(answer.stdout).toBe('2 200')
    const workers = await oneOnEachWorker()
    expect(workers.size).toBe(2)
    expect([...workers.keys()]).not.toContain(cluster.child.pid)
    for (const { session } of workers.values()) {
      expect(session.alpnProtocol).toBe('h2')
      const more = await http2Request(session, { ':path': '/more' })
      expect(more.headers['x-bluegreen-color']).toBe('blue')
      expect(JSON.parse(more.body)).toMatchObject({ name: 'blue' })
    }
  })

  it('a switch reaches the next stream of an open HTTP/2 connection on each worker', async () => {
    const workers = await oneOnEachWorker()
    try {
      for (const { session } of workers.values())
        expect((await http2Request(session)).headers['x-bluegreen-color']).toBe('blue')
      expect((await adminPost(cluster.admin, '/switch', { to: 'green' })).status).toBe(200)
      // No polling: once the switch has been answered, every worker routes by it.
      for (const [pid, { session }] of workers) {
        const next = await http2Request(session)
        expect(next.headers['x-bluegreen-color'], `worker ${pid}`).toBe('green')
        expect(session.closed || session.destroyed).toBe(false)
      }
    } finally {
      for (const { session } of workers.values()) session.close()
      expect((await adminPost(cluster.admin, '/switch', { to: 'blue' })).status).toBe(200)
    }
  })

  it('a certificate renewed on disk reaches every worker; their open connections go on', async () => {
    const workers = await oneOnEachWorker()
    const renewed = await ca.issue('renewed', ['localhost', '127.0.0.1'])
    const renewedSerial = (await serialOf(renewed)).toUpperCase()
    // As certbot and cert-manager do: the new files are moved into place.
    await copyFile(renewed.cert, `${live.cert}.new`)
    await copyFile(renewed.key, `${live.key}.new`)
    await rename(`${live.key}.new`, live.key)
    await rename(`${live.cert}.new`, live.cert)
    await eventually(
      async () => {
        const seen = await serialsOfNewConnections(4)
        return (
          seen.size === 2 &&
          [...seen.values()].every((serials) => serials.size === 1 && serials.has(renewedSerial))
        )
      },
      { timeout: 20_000, message: 'new connections to both workers to be shown the renewed certificate' },
    )
    for (const [pid, { session }] of workers) {
      expect(session.closed || session.destroyed, `worker ${pid}`).toBe(false)
      expect((await http2Request(session)).status).toBe(200)
      session.close()
    }
  })

  it('POST /reload with a new tls.cert reaches both workers: new connections to each are shown it', async () => {
    const second = await ca.issue('second', ['localhost', '127.0.0.1'])
    const secondSerial = (await serialOf(second)).toUpperCase()
    await write({ tls: { cert: second.cert, key: second.key, watchInterval: '50ms' } })
    const answer = await adminPost<{ changed: string[]; workers?: { applied: number[]; failed: unknown[] } }>(
      cluster.admin,
      '/reload',
      {},
    )
    expect(answer.status).toBe(200)
    expect(answer.body.changed).toContain('tls.cert')
    expect(answer.body.workers?.applied).toHaveLength(2)
    expect(answer.body.workers?.failed).toEqual([])
    // The answer came once both workers applied it: every new connection from now on is shown it.
    const seen = await serialsOfNewConnections(6)
    expect(seen.size).toBe(2)
    for (const [pid, serials] of seen) expect([...serials], `worker ${pid}`).toEqual([secondSerial])
  })
})

/** A certificate's serial number in hex, as Node's getPeerCertificate() gives it. */
async function serialOf(files: CertificateFiles): Promise<string> {
  const { X509Certificate } = await import('node:crypto')
  return new X509Certificate(files.certPem).serialNumber
}
