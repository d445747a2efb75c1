import { createPrivateKey, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { createSecureContext } from 'node:tls'
import type {
  CertificateFiles,
  Http2Config,
  ListenerTlsConfig,
  SniCertificate,
  UpstreamTlsConfig,
} from './types.ts'
import {
  type Checker,
  durationIn,
  type Field,
  integerIn,
  LISTEN_EXPECTED,
  MAX_TIMER_MS,
  parseBoolean,
  parseListen,
} from './validate.ts'

// `tls` (the public listener: certificates, SNI, HTTP/2 and its limits) and `pools.<color>.tls` (TLS to upstreams).
// Every file named is read and parsed here, so a missing file or a bad PEM is a config problem with its key path
// (exit 2 at start-up) rather than a failure at the first handshake.

const HTTP2_DEFAULTS: Http2Config = {
  enabled: true,
  // nginx's http2_max_concurrent_streams is 128; Node's default is unbounded (2^32-1).
  maxConcurrentStreams: 128,
  // Twice the HTTP/1.1 listener's 16 KiB (Node's maxHeaderSize): HPACK counts 32 bytes more per field.
  maxHeaderListSize: 32_768,
  // Node's own defaults, named so they show in the docs and can be tightened.
  maxSessionInvalidFrames: 1_000,
  maxSessionRejectedStreams: 100,
}

const SERVER_NAME =
  /^(?:\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/
const SERVER_NAME_EXPECTED = 'a host name such as "example.com" or "*.example.com"'

const nonEmptyString = (value: unknown) => (typeof value === 'string' && value !== '' ? value : undefined)
const serverName = (value: unknown) =>
  typeof value === 'string' && SERVER_NAME.test(value) ? value.toLowerCase() : undefined

export function buildListenerTls(check: Checker, field: Field, baseDir: string): ListenerTlsConfig | null {
  const tls = check.section(field, [
    'cert',
    'key',
    'sni',
    'minVersion',
    'watchInterval',
    'redirectFrom',
    'http2',
  ])
  if (!tls.present) return null
  const pair = certificatePair(check, tls.field('cert'), tls.field('key'), baseDir)
  const sni: SniCertificate[] = []
  for (const item of check.list(tls.field('sni'), 'certificates ({ names, cert, key })') ?? []) {
    const entry = check.section(item, ['names', 'cert', 'key'], { required: true })
    const namesField = entry.field('names')
    const names = (check.list(namesField, 'host names') ?? []).map((name) =>
      check.read(name, '', serverName, SERVER_NAME_EXPECTED),
    )
    if (entry.present && names.length === 0) check.report(namesField.path, 'required: at least one host name')
    const files = certificatePair(check, entry.field('cert'), entry.field('key'), baseDir)
    if (files) sni.push({ names, ...files })
  }
  const redirectFrom = check.read(tls.field('redirectFrom'), null, parseListen, LISTEN_EXPECTED)
  return {
    cert: pair?.cert ?? '',
    key: pair?.key ?? '',
    sni,
    minVersion: check.oneOf(tls.field('minVersion'), ['TLSv1.2', 'TLSv1.3'], 'TLSv1.2'),
    watchInterval: check.read(tls.field('watchInterval'), 5_000, ...durationIn(0, MAX_TIMER_MS)),
    redirectFrom,
    http2: buildHttp2(check, tls.field('http2')),
  }
}

function buildHttp2(check: Checker, field: Field): Http2Config {
  const http2 = check.section(field, Object.keys(HTTP2_DEFAULTS))
  const integer = (key: keyof Http2Config, min: number, max: number) =>
    check.read(http2.field(key), HTTP2_DEFAULTS[key] as number, ...integerIn(min, max))
  return {
    enabled: check.read(http2.field('enabled'), true, parseBoolean, 'true or false'),
    maxConcurrentStreams: integer('maxConcurrentStreams', 1, 10_000),
    maxHeaderListSize: integer('maxHeaderListSize', 1_024, 1_048_576),
    maxSessionInvalidFrames: integer('maxSessionInvalidFrames', 0, 1_000_000),
    maxSessionRejectedStreams: integer('maxSessionRejectedStreams', 0, 1_000_000),
  }
}

export function buildUpstreamTls(check: Checker, field: Field, baseDir: string): UpstreamTlsConfig | null {
  const tls = check.section(field, ['ca', 'servername', 'cert', 'key', 'rejectUnauthorized'])
  if (!tls.present) return null
  const ca = pemFile(check, tls.field('ca'), baseDir, 'certificate')
  const certField = tls.field('cert')
  const keyField = tls.field('key')
  let pair: CertificateFiles | undefined
  if (certField.value !== undefined || keyField.value !== undefined) {
    pair = certificatePair(check, certField, keyField, baseDir)
  }
  return {
    ca,
    servername: check.read(tls.field('servername'), undefined, serverName, SERVER_NAME_EXPECTED),
    cert: pair?.cert,
    key: pair?.key,
    rejectUnauthorized: check.read(tls.field('rejectUnauthorized'), true, parseBoolean, 'true or false'),
  }
}

/** A certificate and its key: both required, both readable PEM, and the key the certificate's own. */
function certificatePair(
  check: Checker,
  certField: Field,
  keyField: Field,
  baseDir: string,
): CertificateFiles | undefined {
  check.required(certField, 'a PEM certificate file (with its chain)')
  check.required(keyField, 'a PEM private key file')
  const cert = pemFile(check, certField, baseDir, 'certificate')
  const key = pemFile(check, keyField, baseDir, 'key')
  if (cert === undefined || key === undefined) return undefined
  const problem = pairProblem(readFileSync(cert), readFileSync(key))
  if (problem) {
    check.report(keyField.path, problem)
    return undefined
  }
  return { cert, key }
}

/** The file's absolute path when it can be read and holds what it should, else undefined (and a problem). */
function pemFile(
  check: Checker,
  field: Field,
  baseDir: string,
  kind: 'certificate' | 'key',
): string | undefined {
  const name = check.read(field, undefined, nonEmptyString, 'a file path')
  if (name === undefined) return undefined
  const path = resolve(baseDir, name)
  let text: Buffer
  try {
    text = readFileSync(path)
  } catch (error) {
    check.report(field.path, `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? error}`)
    return undefined
  }
  const problem = kind === 'certificate' ? certificateProblem(text) : keyProblem(text)
  if (problem) {
    check.report(field.path, `${path}: ${problem}`)
    return undefined
  }
  return path
}

/** Why PEM text is no usable certificate, or undefined. Shared with the listener's certificate store. */
export function certificateProblem(text: Buffer): string | undefined {
  try {
    new X509Certificate(text)
    return undefined
  } catch (error) {
    return `not a PEM certificate (${(error as Error).message})`
  }
}

export function keyProblem(text: Buffer): string | undefined {
  try {
    createPrivateKey(text)
    return undefined
  } catch (error) {
    return `not a PEM private key (${(error as Error).message})`
  }
}

/** Why a certificate and a key cannot be served together (either unreadable, or not a pair), or undefined. */
export function pairProblem(cert: Buffer, key: Buffer): string | undefined {
  const problem = certificateProblem(cert) ?? keyProblem(key)
  if (problem) return problem
  try {
    createSecureContext({ cert, key })
    return undefined
  } catch (error) {
    const { message } = error as Error
    return /mismatch/i.test(message) ? 'the key does not belong to the certificate' : message
  }
}
