import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** PEM files on disk: a certificate and its key, and the text of each. */
export interface CertificateFiles {
  cert: string
  key: string
  certPem: string
  keyPem: string
}

/** A certificate authority made for one test file (a private CA no system trusts). */
export interface TestCa extends CertificateFiles {
  name: string
  dir: string
  /** A certificate for `names` (DNS names and IP addresses, its SANs) signed by this CA. */
  issue(
    file: string,
    names: readonly string[],
    options?: { clientAuth?: boolean; days?: number },
  ): Promise<CertificateFiles>
}

async function readPair(cert: string, key: string): Promise<CertificateFiles> {
  const { readFile } = await import('node:fs/promises')
  return { cert, key, certPem: await readFile(cert, 'utf8'), keyPem: await readFile(key, 'utf8') }
}

/** A new CA in `dir` (openssl, EC P-256 keys: quick to make), named `name`. */
export async function makeCa(dir: string, name = 'bluegreen test CA'): Promise<TestCa> {
  const cert = join(dir, `${name.replace(/\W+/g, '-')}-ca.pem`)
  const key = join(dir, `${name.replace(/\W+/g, '-')}-ca.key`)
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ])
  let serial = 0
  const ca = await readPair(cert, key)
  return {
    ...ca,
    name,
    dir,
    issue: async (file, names, options = {}) => {
      const leafCert = join(dir, `${file}.pem`)
      const leafKey = join(dir, `${file}.key`)
      const csr = join(dir, `${file}.csr`)
      const ext = join(dir, `${file}.ext`)
      const san = names.map((entry) => (/^[\d.]+$|:/.test(entry) ? `IP:${entry}` : `DNS:${entry}`))
      await writeFile(
        ext,
        [
          `subjectAltName=${san.join(',')}`,
          'basicConstraints=CA:FALSE',
          `extendedKeyUsage=${options.clientAuth ? 'clientAuth' : 'serverAuth'}`,
        ].join('\n'),
      )
      await run('openssl', [
        'req',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        leafKey,
        '-out',
        csr,
        '-subj',
        `/CN=${names[0] ?? file}`,
      ])
      serial++
      await run('openssl', [
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        cert,
        '-CAkey',
        key,
        '-set_serial',
        String(Date.now() * 100 + serial),
        '-days',
        String(options.days ?? 2),
        '-extfile',
        ext,
        '-out',
        leafCert,
      ])
      return readPair(leafCert, leafKey)
    },
  }
}
