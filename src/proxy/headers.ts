import { BlockList, isIPv4, isIPv6 } from 'node:net'

// RFC 9110 7.6.1: these describe one connection, not the message, and must not be forwarded. `expect` is
// answered by this proxy itself (Node sends 100 Continue), and the forwarding headers are rebuilt below.
// HTTP2-Settings belongs to an h2c upgrade offer (RFC 7540 3.2.1), which the proxy declines: the request goes
// upstream as plain HTTP/1.1, and the settings would mean nothing there.
const HOP_BY_HOP = new Set([
  'connection',
  'http2-settings',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

const FORWARDING = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host'])

/**
 * The header this proxy puts on a mirrored copy (mirror-send.ts), which an application reads to skip side effects: a
 * client's own is dropped, or a live request could claim to be a copy and be answered without its side effects.
 */
export const MIRROR_HEADER = 'x-bluegreen-mirror'

// Other ways a client names its own address, which applications read too: not rebuilt here, so kept from a
// trusted proxy and dropped from anyone else, who could otherwise claim any address they like.
const CLIENT_ADDRESS = new Set(['forwarded', 'x-real-ip'])

// Nearly every message's Connection header says just this; it names no header, so it needs no splitting.
const PLAIN_CONNECTION = /^[ \t]*(?:keep-alive|close)[ \t]*$/i

/** Header names listed in Connection values: hop-by-hop too, whatever they are called. */
function connectionTokens(values: readonly string[]): Set<string> | undefined {
  let tokens: Set<string> | undefined
  for (const value of values) {
    if (PLAIN_CONNECTION.test(value)) continue
    for (const token of value.split(',')) {
      const name = token.trim().toLowerCase()
      // "keep-alive", "close", "upgrade": nearly every message says one, and none names a header that is not
      // dropped already, so the common case builds no Set at all.
      if (!name || name === 'close' || HOP_BY_HOP.has(name)) continue
      tokens ??= new Set()
      tokens.add(name)
    }
  }
  return tokens
}

/** Answers whether a client address is a trusted proxy, from a list of IPs and CIDRs. */
export class TrustedProxies {
  readonly #list = new BlockList()
  readonly #empty: boolean

  constructor(entries: readonly string[]) {
    this.#empty = entries.length === 0
    for (const entry of entries) {
      const [address, prefix] = entry.split('/') as [string, string | undefined]
      const type = isIPv6(address) ? 'ipv6' : 'ipv4'
      if (prefix === undefined) this.#list.addAddress(address, type)
      else this.#list.addSubnet(address, Number(prefix), type)
    }
  }

  has(address: string | undefined): boolean {
    if (this.#empty || !address) return false
    if (isIPv4(address)) return this.#list.check(address, 'ipv4')
    // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
    const mapped = mappedIPv4(address)
    if (mapped !== address) return this.#list.check(mapped, 'ipv4')
    return this.#list.check(address, 'ipv6')
  }
}

export interface ForwardingInfo {
  /** The client's address as this proxy's socket sees it. */
  peer: string
  /** Whether that peer is a trusted proxy, so the X-Forwarded-* it sent are kept and extended. */
  trusted: boolean
  /** "http" or "https": how the client reached this proxy. */
  proto: string
  /** Keep the client's Host header; when false, undici sends the upstream's own host. */
  preserveHost: boolean
}

/**
 * The headers to send upstream, as a flat [name, value, ...] list built from the client's raw headers:
 * hop-by-hop headers (and every header Connection names) dropped, X-Forwarded-For/-Proto/-Host set.
 * An HTTP/2 request's pseudo-headers (first in its list) are dropped too, its :authority becoming the Host, and
 * its cookies, which HTTP/2 may split over several fields, are joined into one header for HTTP/1.1 (RFC 9113 8.2.3).
 */
export function upstreamRequestHeaders(rawHeaders: readonly string[], info: ForwardingInfo): string[] {
  const connection: string[] = []
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.length === 10 && rawHeaders[i]!.toLowerCase() === 'connection')
      connection.push(rawHeaders[i + 1]!)
  }
  const named = connection.length > 0 ? connectionTokens(connection) : undefined

  const out: string[] = []
  let forwardedFor: string | undefined
  let forwardedProto: string | undefined
  let forwardedHost: string | undefined
  let host: string | undefined
  let authority: string | undefined
  let http2 = false
  let cookieAt = -1
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!
    const value = rawHeaders[i + 1]!
    if (name.charCodeAt(0) === 58 /* ":" */) {
      http2 = true
      if (name === ':authority') authority = value
      continue
    }
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower) || lower === 'expect' || lower === MIRROR_HEADER || named?.has(lower)) continue
    if (http2 && lower === 'cookie') {
      if (cookieAt !== -1) {
        out[cookieAt] = `${out[cookieAt]}; ${value}`
        continue
      }
      cookieAt = out.length + 1
    }
    if (CLIENT_ADDRESS.has(lower) && !info.trusted) continue
    if (FORWARDING.has(lower)) {
      if (!info.trusted) continue
      if (lower === 'x-forwarded-for')
        forwardedFor = forwardedFor === undefined ? value : `${forwardedFor}, ${value}`
      else if (lower === 'x-forwarded-proto') forwardedProto ??= value
      else forwardedHost ??= value
      continue
    }
    if (lower === 'host') {
      host = value
      if (!info.preserveHost) continue
    }
    out.push(name, value)
  }
  if (host === undefined && authority !== undefined) {
    host = authority
    if (info.preserveHost) out.push('host', authority)
  }
  const peer = mappedIPv4(info.peer)
  out.push(
    'x-forwarded-for',
    forwardedFor === undefined ? peer : `${forwardedFor}, ${peer}`,
    'x-forwarded-proto',
    forwardedProto ?? info.proto,
  )
  const xfHost = forwardedHost ?? host
  if (xfHost !== undefined) out.push('x-forwarded-host', xfHost)
  return out
}

/**
 * The headers to send upstream with a WebSocket upgrade, as http-proxy-3 takes them: an object of lower-case
 * names, built like upstreamRequestHeaders, with repeated headers folded into one and the upgrade itself put back
 * (Connection and Upgrade are hop-by-hop, so dropped there). `upgrade` is the client's Upgrade value, in its spelling.
 */
export function upgradeRequestHeaders(
  rawHeaders: readonly string[],
  info: ForwardingInfo,
  upgrade: string,
): Record<string, string> {
  const flat = upstreamRequestHeaders(rawHeaders, info)
  const headers: Record<string, string> = {}
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i]!.toLowerCase()
    const value = flat[i + 1]!
    // Repeated headers fold into one with ", ", except Cookie, whose separator is "; " (RFC 9110 5.3).
    const separator = name === 'cookie' ? '; ' : ', '
    headers[name] = headers[name] === undefined ? value : `${headers[name]}${separator}${value}`
  }
  headers.connection = 'Upgrade'
  headers.upgrade = upgrade
  return headers
}

/** An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d; upstreams expect a.b.c.d. */
function mappedIPv4(address: string): string {
  return address.startsWith('::ffff:') && isIPv4(address.slice(7)) ? address.slice(7) : address
}

/**
 * The upstream's response headers (undici's parsed object: lower-case names, repeated ones as arrays) as a
 * flat list for ServerResponse.writeHead, with hop-by-hop headers dropped. Node frames the body itself.
 * `own` is a (lower-case) header this proxy sets itself, such as the color header: an upstream's copy is dropped.
 */
export function clientResponseHeaders(
  headers: Record<string, string | string[] | undefined>,
  own?: string | null,
): string[] {
  const connection = headers.connection
  const named =
    connection === undefined
      ? undefined
      : connectionTokens(Array.isArray(connection) ? connection : [connection])
  const out: string[] = []
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || named?.has(name) || name === own) continue
    const value = headers[name]
    if (value === undefined) continue
    if (Array.isArray(value)) for (const item of value) out.push(name, item)
    else out.push(name, value)
  }
  return out
}

/**
 * An HTTP/2 request's Host header when it names another authority than its :authority, else undefined (RFC 9113
 * 8.3.1: such a request is malformed). Both go upstream as the one Host of HTTP/1.1, and a front that routes or
 * authorizes on :authority while the application reads Host would be looking at two different requests. Compared
 * without case and without the default port (scheme-based normalization: the listener is https).
 */
export function conflictingHost(rawHeaders: readonly string[]): string | undefined {
  let authority: string | undefined
  let host: string | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!
    if (name === ':authority') authority = rawHeaders[i + 1]
    else if (name.length === 4 && name.toLowerCase() === 'host') host = rawHeaders[i + 1]
  }
  if (authority === undefined || host === undefined) return undefined
  return normalAuthority(authority) === normalAuthority(host) ? undefined : host
}

function normalAuthority(authority: string): string {
  return authority.trim().toLowerCase().replace(/:443$/, '')
}

// Nearly every chunked request says just this.
const ONLY_CHUNKED = /^[ \t]*chunked[ \t]*$/i

/**
 * The transfer codings a request's Transfer-Encoding names besides chunked ("gzip" for "gzip, chunked"), or
 * undefined when there are none. Node's parser already refuses (400) a list that does not end in chunked, and
 * frames the body by that chunked; a coding before it would be lost with the hop-by-hop header, so the upstream
 * would get a gzipped body that says nothing of it. RFC 9112 6.1: such a request is answered 501.
 */
export function codingsBesidesChunked(transferEncoding: string | undefined): string | undefined {
  if (transferEncoding === undefined || ONLY_CHUNKED.test(transferEncoding)) return undefined
  const others = transferEncoding
    .split(',')
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding !== '' && coding !== 'chunked')
  return others.length > 0 ? others.join(', ') : undefined
}

/** Reads one cookie's value from a Cookie header without parsing the rest. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined
  let from = 0
  for (;;) {
    const at = header.indexOf(name, from)
    if (at === -1) return undefined
    const before = at === 0 ? ';' : header[at - 1]
    const boundary = before === ';' || before === ' '
    if (boundary && header[at + name.length] === '=') {
      const start = at + name.length + 1
      const end = header.indexOf(';', start)
      const value = (end === -1 ? header.slice(start) : header.slice(start, end)).trim()
      // RFC 6265 allows the value in double quotes.
      return value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value
    }
    from = at + name.length
  }
}
