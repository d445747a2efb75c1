import { copyFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildConfig } from '../../src/config/schema.ts'
import { ConfigError, type ConfigProblem } from '../../src/errors.ts'
import { silentLogger } from '../../src/log.ts'
import { CertificateStore } from '../../src/proxy/certificates.ts'
import { type CertificateFiles, makeCa, type TestCa } from '../helpers/certificates.ts'
import { killRunningClis, runCli } from '../helpers/cli.ts'
import { tempDir, writeConfig } from '../helpers/servers.ts'

// `tls` and `pools.<color>.tls`: every file is read when the config is, so a missing file or a bad PEM is a config
// problem with its key path (exit 2), never a failure at the first handshake.

const pools = { blue: { upstreams: ['http://127.0.0.1:3001'] }, green: { upstreams: [] } }

function problemsOf(raw: Record<string, unknown>, baseDir: string): ConfigProblem[] {
  try {
    buildConfig({ pools, ...raw }, {}, { baseDir })
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    return [...(error as ConfigError).problems]
  }
  throw new Error('expected the config to be rejected')
}

afterAll(() => {
  killRunningClis()
})

describe('TLS config', () => {
  let dir: { path: string; remove(): Promise<void> }
  let ca: TestCa
  let leaf: CertificateFiles
  let second: CertificateFiles
  let garbage: string

  beforeAll(async () => {
    dir = await tempDir('bluegreen-tls-config-')
    ca = await makeCa(dir.path)
    leaf = await ca.issue('leaf', ['localhost'])
    second = await ca.issue('second', ['second.test'])
    garbage = join(dir.path, 'garbage.pem')
    await writeFile(garbage, '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n')
  })

  afterAll(async () => {
    await dir?.remove()
  })

  it('reads the listener and pool TLS with their defaults; paths are relative to the config file', () => {
    const config = buildConfig(
      {
        tls: {
          cert: 'leaf.pem',
          key: 'leaf.key',
          sni: [{ names: ['Second.test'], cert: 'second.pem', key: 'second.key' }],
        },
        pools: {
          blue: { upstreams: ['https://10.0.0.1:8443'], tls: { ca: ca.cert, servername: 'app.internal' } },
          green: { upstreams: [] },
        },
      },
      {},
      { baseDir: dir.path },
    )
    expect(config.tls).toEqual({
      cert: leaf.cert,
      key: leaf.key,
      sni: [{ names: ['second.test'], cert: second.cert, key: second.key }],
      minVersion: 'TLSv1.2',
      watchInterval: 5000,
      redirectFrom: null,
      http2: {
        enabled: true,
        maxConcurrentStreams: 128,
        maxHeaderListSize: 32768,
        maxSessionInvalidFrames: 1000,
        maxSessionRejectedStreams: 100,
      },
    })
    expect(config.pools.blue.tls).toEqual({
      ca: ca.cert,
      servername: 'app.internal',
      cert: undefined,
      key: undefined,
      rejectUnauthorized: true,
    })
    expect(config.pools.green.tls).toBeNull()
  })

  it('names the key path of every missing file, bad PEM and mismatched key, all at once', () => {
    const problems = problemsOf(
      {
        tls: {
          cert: 'missing.pem',
          key: leaf.key,
          sni: [
            { names: ['a.test'], cert: garbage, key: leaf.key },
            { names: [], cert: second.cert, key: leaf.key },
          ],
          minVersion: 'TLSv1.0',
          redirectFrom: 'nowhere',
          http2: { maxConcurrentStreams: 0, maxHeaderListSise: 1 },
        },
        pools: {
          blue: { upstreams: ['https://127.0.0.1:8443'], tls: { ca: leaf.key, cert: leaf.cert } },
          green: { upstreams: ['http://127.0.0.1:8080'], tls: { rejectUnauthorized: false } },
        },
      },
      dir.path,
    )
    const at = (path: string) => problems.find((problem) => problem.path === path)?.message
    expect(at('tls.cert')).toMatch(/cannot read .*missing\.pem: ENOENT/)
    expect(at('tls.sni[0].cert')).toMatch(/garbage\.pem: not a PEM certificate/)
    expect(at('tls.sni[1].names')).toBe('required: at least one host name')
    expect(at('tls.sni[1].key')).toBe('the key does not belong to the certificate')
    expect(at('tls.minVersion')).toMatch(/expected one of: TLSv1.2, TLSv1.3/)
    expect(at('tls.redirectFrom')).toMatch(/expected an address/)
    expect(at('tls.http2.maxConcurrentStreams')).toMatch(/an integer from 1/)
    expect(at('tls.http2.maxHeaderListSise')).toMatch(/unknown key.*did you mean "maxHeaderListSize"/)
    expect(at('pools.blue.tls.ca')).toMatch(/not a PEM certificate/)
    expect(at('pools.blue.tls.key')).toBe('required: a PEM private key file')
    expect(at('pools.green.tls')).toBe('applies to https:// upstreams, and this pool has none')
  })

  it('CertificateStore: a file gone since the check is a ConfigError; a broken update is refused whole', async () => {
    const live = { cert: join(dir.path, 'store.pem'), key: join(dir.path, 'store.key') }
    await copyFile(leaf.cert, live.cert)
    await copyFile(leaf.key, live.key)
    const config = buildConfig({ pools, tls: { cert: live.cert, key: live.key } }, {}, { baseDir: dir.path })
    const store = new CertificateStore(config.tls!, silentLogger())
    const before = store.contextFor('localhost')
    await writeFile(live.key, 'garbage')
    const problem = store.update()
    expect(problem?.message).toMatch(/store\.key: not a PEM private key/)
    expect(store.contextFor('localhost')).toBe(before)
    // A pair from another certificate: each file fine, together not.
    await copyFile(second.key, live.key)
    expect(store.update()?.message).toMatch(/the key does not belong to the certificate/)
    await copyFile(leaf.key, live.key)
    expect(store.update()).toBeUndefined()
    expect(store.contextFor('localhost')).not.toBe(before)
    await rm(live.cert)
    expect(() => new CertificateStore(config.tls!, silentLogger())).toThrow(ConfigError)
  })

  it('bluegreen check shows the listener and pool TLS', async () => {
    const file = await writeConfig(
      dir.path,
      {
        listen: '127.0.0.1:8443',
        tls: {
          cert: 'leaf.pem',
          key: 'leaf.key',
          sni: [{ names: ['second.test'], cert: 'second.pem', key: 'second.key' }],
          redirectFrom: ':8080',
        },
        pools: {
          blue: {
            upstreams: ['https://10.0.0.1:8443'],
            tls: { ca: ca.cert, cert: 'leaf.pem', key: 'leaf.key' },
          },
          green: { upstreams: [] },
        },
      },
      'check.json',
    )
    const result = await runCli(['check', '--config', file])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toContain(
      `proxy       127.0.0.1:8443 (https: h2 and HTTP/1.1, TLS 1.2+, certificate ${leaf.cert}, 1 more by SNI, redirect from 0.0.0.0:8080)\n`,
    )
    expect(result.stdout).toContain('TLS: own CA, client certificate)')
  })

  it('bluegreen serve and check: exit 2 with the key path of a bad certificate', async () => {
    const file = await writeConfig(dir.path, {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      tls: { cert: 'garbage.pem', key: 'leaf.key' },
      pools,
      state: { path: join(dir.path, 'state.json') },
    })
    for (const command of ['serve', 'check']) {
      const result = await runCli([command, '--config', file])
      expect(result.code).toBe(2)
      expect(result.stderr).toMatch(/tls\.cert.*garbage\.pem: not a PEM certificate/)
      expect(result.stderr).not.toMatch(/\n\s+at /)
    }
  })
})
