import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { AdminToken } from '../config/types.ts'
import { BlueGreenError } from '../errors.ts'
import type { Logger } from '../log.ts'

export interface GuardOptions {
  tokens: readonly AdminToken[]
  allowedHosts: readonly string[] | null
  allowedOrigins: readonly string[]
  logger: Logger
  /** For tests: the clock. */
  now?: () => number
}

/** Failed authentications allowed from one address before it has to wait. */
const FREE_FAILURES = 5
const MAX_BLOCK_MS = 60_000
const MAX_TRACKED = 10_000

interface Failures {
  count: number
  blockedUntil: number
  lastAt: number
}

/**
 * Who may use the admin API, which can move all traffic:
 * - the Host header must be an allowed host (a page on an attacker's domain that resolves to 127.0.0.1 sends the
 *   attacker's host name: DNS rebinding);
 * - a mutating call from a browser page of another origin is refused (CSRF): browsers send Origin and
 *   Sec-Fetch-Site on such calls (and Referer, judged likewise when Origin is missing), the CLI and curl send none
 *   of them. The console's own page (same origin as the admin API: its Origin names the Host the call was sent to)
 *   is allowed: that Host passed checkHost, so it is no rebound attacker's name, and a listener answering any host
 *   must have a token, which a foreign page lacks;
 * - with tokens configured, a mutating call (and a read of users' data) needs one (compared in constant time, by
 *   hash, so neither timing nor length says anything about a token), and repeated wrong tokens from one address
 *   are slowed down with 429.
 */
export class AdminGuard {
  readonly #tokens: { name: string; digest: Buffer }[]
  readonly #options: GuardOptions
  readonly #failures = new Map<string, Failures>()
  readonly #now: () => number

  constructor(options: GuardOptions) {
    this.#options = options
    this.#tokens = options.tokens.map(({ name, token }) => ({ name, digest: sha256(token) }))
    this.#now = options.now ?? Date.now
  }

  /** Every call: the Host must be one the admin API answers to. */
  checkHost(req: IncomingMessage): void {
    const { allowedHosts } = this.#options
    if (allowedHosts === null) return
    const host = hostName(req.headers.host)
    if (host === undefined) throw forbiddenHost(req)
    if (allowedHosts.includes(host)) return
    // The local CLI names the address it dials (127.0.0.1:PORT), whatever the list says. A loopback name from a
    // loopback peer is no rebinding: a rebound browser page sends the attacker's name, never "localhost".
    if (!(LOOPBACK_HOSTS.has(host) && isLoopbackPeer(req.socket.remoteAddress))) throw forbiddenHost(req)
  }

  /** A mutating call: refuses cross-site browsers and wrong tokens; returns the token's name, if tokens are set. */
  authorize(req: IncomingMessage): string | undefined {
    const address = req.socket.remoteAddress ?? 'unknown'
    const origin = req.headers.origin
    if (
      origin !== undefined &&
      !this.#options.allowedOrigins.includes(origin) &&
      !isSameOrigin(origin, req.headers.host)
    ) {
      throw new BlueGreenError(
        'BG_FORBIDDEN',
        `calls from origin ${origin} are not allowed; see admin.allowedOrigins`,
      )
    }
    if (origin === undefined && req.headers['sec-fetch-site'] === 'cross-site') {
      throw new BlueGreenError('BG_FORBIDDEN', 'cross-site calls from a browser are not allowed')
    }
    // A browser that sends no Origin (older ones, on some posts) still names the page in Referer; tools send neither.
    const referer = req.headers.referer
    if (origin === undefined && referer !== undefined) {
      const from = URL.parse(referer)?.origin
      if (
        from === undefined ||
        (!this.#options.allowedOrigins.includes(from) && !isSameOrigin(from, req.headers.host))
      ) {
        throw new BlueGreenError(
          'BG_FORBIDDEN',
          `calls from a page at ${from ?? 'an unreadable address'} are not allowed; see admin.allowedOrigins`,
        )
      }
    }
    if (this.#tokens.length === 0) return undefined
    const now = this.#now()
    const failures = this.#failures.get(address)
    if (failures && failures.blockedUntil > now) {
      const retryAfter = Math.ceil((failures.blockedUntil - now) / 1000)
      throw new BlueGreenError(
        'BG_TOO_MANY_ATTEMPTS',
        `too many failed authentications from ${address}; retry in ${retryAfter} s`,
        { retryAfter },
      )
    }
    const name = this.#match(req.headers.authorization)
    if (name !== undefined) {
      this.#failures.delete(address)
      return name
    }
    // A call without any Authorization guessed nothing: it is refused, but counts for no block (a console left
    // open without its token reads GET /mirror/diffs every few seconds, and must not lock its operator out).
    if (req.headers.authorization !== undefined) this.#fail(address, now)
    throw new BlueGreenError('BG_UNAUTHORIZED', 'a valid "Authorization: Bearer <token>" header is required')
  }

  #match(header: string | undefined): string | undefined {
    // The scheme is case-insensitive (RFC 9110 11.1): "bearer" and "BEARER" are the same as "Bearer".
    const match = /^bearer +(\S+) *$/i.exec(header ?? '')
    if (!match) return undefined
    const digest = sha256(match[1]!)
    let found: string | undefined
    // Every token is compared, so the time taken does not depend on which one matched.
    for (const token of this.#tokens) if (timingSafeEqual(digest, token.digest)) found = token.name
    return found
  }

  #fail(address: string, now: number): void {
    const failures = this.#failures.get(address) ?? { count: 0, blockedUntil: 0, lastAt: now }
    // Failures spread over more than the longest block are forgiven. Quiet time counts from the end of a block:
    // counted from the last failure, an attacker who waits out a 60 s block would get five free guesses again.
    if (now - Math.max(failures.lastAt, failures.blockedUntil) > MAX_BLOCK_MS) failures.count = 0
    failures.count++
    failures.lastAt = now
    if (failures.count >= FREE_FAILURES) {
      const blockMs = Math.min(1000 * 2 ** (failures.count - FREE_FAILURES), MAX_BLOCK_MS)
      failures.blockedUntil = now + blockMs
      this.#options.logger.warn(
        { address, failures: failures.count, blockMs },
        'repeated admin authentication failures',
      )
    }
    this.#failures.delete(address)
    this.#failures.set(address, failures)
    // A bounded map: the oldest entry goes first (a Map iterates in insertion order).
    if (this.#failures.size > MAX_TRACKED) this.#failures.delete(this.#failures.keys().next().value!)
  }
}

/** The Origin a page served by this very listener sends: its scheme, and the Host the call names. */
function isSameOrigin(origin: string, host: string | undefined): boolean {
  const url = URL.parse(origin)
  if (!url || host === undefined || !/^https?:$/.test(url.protocol)) return false
  return url.host === host.toLowerCase()
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '::1'])

function isLoopbackPeer(address: string | undefined): boolean {
  if (address === undefined) return false
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address
  return v4 === '::1' || v4.startsWith('127.')
}

function forbiddenHost(req: IncomingMessage): BlueGreenError {
  return new BlueGreenError(
    'BG_FORBIDDEN',
    `the admin API does not answer to host ${JSON.stringify(req.headers.host ?? '')}; see admin.allowedHosts`,
  )
}

/** The host name of a Host header, lower-cased, without its port: "[::1]:9090" -> "::1". */
export function hostName(header: string | undefined): string | undefined {
  if (!header) return undefined
  const url = URL.parse(`http://${header}`)
  if (!url || url.username || url.password || url.pathname !== '/') return undefined
  return url.hostname.replace(/^\[|\]$/g, '').toLowerCase()
}

function sha256(value: string): Buffer {
  return createHash('sha256').update(value).digest()
}
