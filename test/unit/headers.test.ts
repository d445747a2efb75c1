import { describe, expect, it } from 'vitest'
import {
  clientResponseHeaders,
  codingsBesidesChunked,
  conflictingHost,
  cookieValue,
  type ForwardingInfo,
  TrustedProxies,
  upgradeRequestHeaders,
  upstreamRequestHeaders,
} from '../../src/proxy/headers.ts'

const untrusted: ForwardingInfo = { peer: '203.0.113.7', trusted: false, proto: 'http', preserveHost: true }
const trusted: ForwardingInfo = { ...untrusted, peer: '10.0.0.2', trusted: true }

/** The flat [name, value, ...] list as pairs, which reads better in assertions. */
function pairs(flat: readonly string[]): [string, string][] {
  const out: [string, string][] = []
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!])
  return out
}

function names(flat: readonly string[]): string[] {
  return pairs(flat).map(([name]) => name.toLowerCase())
}

function valuesOf(flat: readonly string[], name: string): string[] {
  return pairs(flat)
    .filter(([key]) => key.toLowerCase() === name)
    .map(([, value]) => value)
}

describe('upstreamRequestHeaders', () => {
  it('HTTP/2: drops the pseudo-headers, makes :authority the Host and joins split cookies into one', () => {
    const raw = [
      ':method',
      'GET',
      ':scheme',
      'https',
      ':authority',
      'shop.test',
      ':path',
      '/a',
      'cookie',
      'a=1',
      'accept',
      '*/*',
      'cookie',
      'b=2',
    ]
    const https = { ...untrusted, proto: 'https' }
    expect(pairs(upstreamRequestHeaders(raw, https))).toEqual([
      ['cookie', 'a=1; b=2'],
      ['accept', '*/*'],
      ['host', 'shop.test'],
      ['x-forwarded-for', '203.0.113.7'],
      ['x-forwarded-proto', 'https'],
      ['x-forwarded-host', 'shop.test'],
    ])
    // Without preserveHost the upstream's own host is sent (by undici); X-Forwarded-Host still names the client's.
    const own = upstreamRequestHeaders(raw, { ...https, preserveHost: false })
    expect(valuesOf(own, 'host')).toEqual([])
    expect(valuesOf(own, 'x-forwarded-host')).toEqual(['shop.test'])
    // A Host the client sent as well wins over :authority, and is not sent twice.
    expect(valuesOf(upstreamRequestHeaders([...raw, 'host', 'other.test'], https), 'host')).toEqual([
      'other.test',
    ])
  })

  it('HTTP/1.1: repeated Cookie headers are left as they came', () => {
    const raw = ['Host', 'a.test', 'Cookie', 'a=1', 'Cookie', 'b=2']
    expect(valuesOf(upstreamRequestHeaders(raw, untrusted), 'cookie')).toEqual(['a=1', 'b=2'])
  })

  it('drops every hop-by-hop header and keeps end-to-end ones with their case and order', () => {
    const raw = [
      'Host',
      'example.test',
      'Connection',
      'keep-alive',
      'Keep-Alive',
      'timeout=5',
      'Proxy-Connection',
      'keep-alive',
      'Proxy-Authorization',
      'Basic abc',
      'Proxy-Authenticate',
      'Basic',
      'TE',
      'trailers',
      'Trailer',
      'X-Checksum',
      'Transfer-Encoding',
      'chunked',
      'Upgrade',
      'h2c',
      'Expect',
      '100-continue',
      'Authorization',
      'Bearer token',
      'X-Custom',
      'a',
      'Accept',
      '*/*',
    ]
    const out = upstreamRequestHeaders(raw, untrusted)
    expect(pairs(out).slice(0, 4)).toEqual([
      ['Host', 'example.test'],
      ['Authorization', 'Bearer token'],
      ['X-Custom', 'a'],
      ['Accept', '*/*'],
    ])
    for (const hop of [
      'connection',
      'keep-alive',
      'proxy-connection',
      'proxy-authorization',
      'proxy-authenticate',
      'te',
      'trailer',
      'transfer-encoding',
      'upgrade',
      'expect',
    ]) {
      expect(names(out)).not.toContain(hop)
    }
  })

  it('drops every header the Connection header names, in any case, across comma lists and repeats', () => {
    const raw = [
      'connection',
      'keep-alive, X-Hop-One ,x-hop-two',
      'CONNECTION',
      ' X-HOP-THREE,,',
      'x-hop-one',
      '1',
      'X-Hop-Two',
      '2',
      'x-HOP-three',
      '3',
      'X-Stays',
      'yes',
    ]
    const out = upstreamRequestHeaders(raw, untrusted)
    expect(names(out)).not.toContain('x-hop-one')
    expect(names(out)).not.toContain('x-hop-two')
    expect(names(out)).not.toContain('x-hop-three')
    expect(valuesOf(out, 'x-stays')).toEqual(['yes'])
  })

  it('drops HTTP2-Settings, which only an h2c upgrade offer carries, even when Connection does not name it', () => {
    const raw = [
      'Host',
      'example.test',
      'Upgrade',
      'h2c',
      'HTTP2-Settings',
      'AAMAAABkAAQAAP__',
      'X-Stays',
      'yes',
    ]
    const out = upstreamRequestHeaders(raw, untrusted)
    expect(names(out)).not.toContain('http2-settings')
    expect(names(out)).not.toContain('upgrade')
    expect(valuesOf(out, 'x-stays')).toEqual(['yes'])
  })

  it('keeps repeated end-to-end headers as separate lines', () => {
    const out = upstreamRequestHeaders(
      ['Accept', 'a', 'accept', 'b', 'Cookie', 'x=1', 'Cookie', 'y=2'],
      untrusted,
    )
    expect(valuesOf(out, 'accept')).toEqual(['a', 'b'])
    expect(valuesOf(out, 'cookie')).toEqual(['x=1', 'y=2'])
  })

  describe('from an untrusted peer', () => {
    it('replaces the client-supplied X-Forwarded-* with what this proxy saw', () => {
      const raw = [
        'Host',
        'example.test',
        'X-Forwarded-For',
        '1.2.3.4',
        'x-forwarded-for',
        '5.6.7.8',
        'X-Forwarded-Proto',
        'https',
        'X-Forwarded-Host',
        'evil.test',
      ]
      const out = upstreamRequestHeaders(raw, untrusted)
      expect(valuesOf(out, 'x-forwarded-for')).toEqual(['203.0.113.7'])
      expect(valuesOf(out, 'x-forwarded-proto')).toEqual(['http'])
      expect(valuesOf(out, 'x-forwarded-host')).toEqual(['example.test'])
    })

    it('drops the other client-address headers a client could forge (Forwarded, X-Real-IP)', () => {
      const raw = ['Forwarded', 'for=1.2.3.4', 'X-Real-IP', '1.2.3.4', 'X-Other', 'kept']
      const out = upstreamRequestHeaders(raw, untrusted)
      expect(names(out)).not.toContain('forwarded')
      expect(names(out)).not.toContain('x-real-ip')
      expect(valuesOf(out, 'x-other')).toEqual(['kept'])
    })

    it('sets X-Forwarded-For even when the client sent none, and no X-Forwarded-Host without a Host', () => {
      const out = upstreamRequestHeaders([], untrusted)
      expect(pairs(out)).toEqual([
        ['x-forwarded-for', '203.0.113.7'],
        ['x-forwarded-proto', 'http'],
      ])
    })

    it('names an IPv4 client on a dual-stack socket by its IPv4 address', () => {
      const out = upstreamRequestHeaders([], { ...untrusted, peer: '::ffff:192.0.2.9' })
      expect(valuesOf(out, 'x-forwarded-for')).toEqual(['192.0.2.9'])
    })

    it('keeps an IPv6 peer as it is', () => {
      const out = upstreamRequestHeaders([], { ...untrusted, peer: '2001:db8::1' })
      expect(valuesOf(out, 'x-forwarded-for')).toEqual(['2001:db8::1'])
    })

    it('uses the proto the listener was reached by', () => {
      const out = upstreamRequestHeaders([], { ...untrusted, proto: 'https' })
      expect(valuesOf(out, 'x-forwarded-proto')).toEqual(['https'])
    })
  })

  describe('from a trusted peer', () => {
    it('appends the peer to X-Forwarded-For, joining repeated headers in order', () => {
      const raw = ['X-Forwarded-For', '198.51.100.1', 'X-Forwarded-For', '198.51.100.2, 10.0.0.1']
      const out = upstreamRequestHeaders(raw, trusted)
      expect(valuesOf(out, 'x-forwarded-for')).toEqual(['198.51.100.1, 198.51.100.2, 10.0.0.1, 10.0.0.2'])
    })

    it('keeps the proto and host the first proxy recorded', () => {
      const raw = ['Host', 'internal.test', 'X-Forwarded-Proto', 'https', 'X-Forwarded-Host', 'public.test']
      const out = upstreamRequestHeaders(raw, trusted)
      expect(valuesOf(out, 'x-forwarded-proto')).toEqual(['https'])
      expect(valuesOf(out, 'x-forwarded-host')).toEqual(['public.test'])
    })

    it('fills in whatever the trusted proxy did not send', () => {
      const out = upstreamRequestHeaders(['Host', 'example.test'], trusted)
      expect(valuesOf(out, 'x-forwarded-for')).toEqual(['10.0.0.2'])
      expect(valuesOf(out, 'x-forwarded-proto')).toEqual(['http'])
      expect(valuesOf(out, 'x-forwarded-host')).toEqual(['example.test'])
    })

    it('keeps Forwarded and X-Real-IP', () => {
      const out = upstreamRequestHeaders(['Forwarded', 'for=1.2.3.4', 'X-Real-IP', '1.2.3.4'], trusted)
      expect(valuesOf(out, 'forwarded')).toEqual(['for=1.2.3.4'])
      expect(valuesOf(out, 'x-real-ip')).toEqual(['1.2.3.4'])
    })
  })

  it('passes Host through with preserveHost, and drops it (so undici sends the upstream host) without', () => {
    const raw = ['Host', 'example.test:8443']
    expect(valuesOf(upstreamRequestHeaders(raw, untrusted), 'host')).toEqual(['example.test:8443'])
    const dropped = upstreamRequestHeaders(raw, { ...untrusted, preserveHost: false })
    expect(names(dropped)).not.toContain('host')
    expect(valuesOf(dropped, 'x-forwarded-host')).toEqual(['example.test:8443'])
  })
})

describe('upstreamRequestHeaders and the mirror header', () => {
  it("drops a client's x-bluegreen-mirror, which only the proxy's copies carry", () => {
    const raw = ['X-Bluegreen-Mirror', '1', 'Accept', '*/*', 'x-bluegreen-mirror', '1']
    for (const info of [untrusted, trusted]) {
      expect(names(upstreamRequestHeaders(raw, info))).not.toContain('x-bluegreen-mirror')
    }
  })
})

describe('conflictingHost', () => {
  it('names a Host that differs from :authority; the same one in another case or with the default port is no conflict', () => {
    const h2 = (host: string) => [':method', 'GET', ':authority', 'shop.example', ':path', '/', 'Host', host]
    expect(conflictingHost(h2('evil.example'))).toBe('evil.example')
    expect(conflictingHost(h2('shop.example:8443'))).toBe('shop.example:8443')
    expect(conflictingHost(h2('SHOP.example'))).toBeUndefined()
    expect(conflictingHost(h2('shop.example:443'))).toBeUndefined()
    expect(conflictingHost([':authority', 'shop.example', ':path', '/'])).toBeUndefined()
    expect(conflictingHost(['Host', 'shop.example'])).toBeUndefined()
  })
})

describe('upgradeRequestHeaders', () => {
  const upgrade = (raw: string[], info = untrusted) => upgradeRequestHeaders(raw, info, 'WebSocket')

  it('folds repeated headers into one with ", ", and Cookie with "; "', () => {
    const headers = upgrade([
      'Cookie',
      'a=1',
      'Accept-Language',
      'en',
      'cookie',
      'b=2',
      'Accept-Language',
      'fr',
      'COOKIE',
      'c=3',
    ])
    expect(headers.cookie).toBe('a=1; b=2; c=3')
    expect(headers['accept-language']).toBe('en, fr')
  })

  it('names every header in lower case, as http-proxy-3 expects of an IncomingMessage', () => {
    const headers = upgrade([
      'Host',
      'example.test',
      'Sec-WebSocket-Key',
      'abc==',
      'Sec-WebSocket-Version',
      '13',
    ])
    expect(Object.keys(headers).sort()).toEqual(
      [
        'connection',
        'host',
        'sec-websocket-key',
        'sec-websocket-version',
        'upgrade',
        'x-forwarded-for',
        'x-forwarded-host',
        'x-forwarded-proto',
      ].sort(),
    )
    expect(headers['sec-websocket-key']).toBe('abc==')
  })

  it('puts the upgrade back, in the spelling given, over the hop-by-hop headers it drops', () => {
    const headers = upgrade([
      'Connection',
      'keep-alive, Upgrade, X-Secret',
      'Upgrade',
      'websocket',
      'X-Secret',
      'hop',
      'Keep-Alive',
      'timeout=5',
    ])
    expect(headers.connection).toBe('Upgrade')
    expect(headers.upgrade).toBe('WebSocket')
    expect(headers['x-secret']).toBeUndefined()
    expect(headers['keep-alive']).toBeUndefined()
  })

  it('rebuilds the forwarding headers as for any request', () => {
    const forged = ['X-Forwarded-For', '6.6.6.6', 'X-Real-IP', '6.6.6.6', 'Host', 'example.test']
    expect(upgrade(forged)).toMatchObject({
      'x-forwarded-for': '203.0.113.7',
      'x-forwarded-proto': 'http',
      'x-forwarded-host': 'example.test',
    })
    expect(upgrade(forged)['x-real-ip']).toBeUndefined()
    expect(upgrade(forged, trusted)).toMatchObject({
      'x-forwarded-for': '6.6.6.6, 10.0.0.2',
      'x-real-ip': '6.6.6.6',
    })
  })
})

describe('TrustedProxies', () => {
  it('trusts nobody when the list is empty', () => {
    const none = new TrustedProxies([])
    expect(none.has('127.0.0.1')).toBe(false)
    expect(none.has('::1')).toBe(false)
    expect(none.has(undefined)).toBe(false)
  })

  it('matches IPv4 addresses and CIDRs', () => {
    const list = new TrustedProxies(['10.0.0.0/8', '192.0.2.5'])
    expect(list.has('10.255.1.2')).toBe(true)
    expect(list.has('192.0.2.5')).toBe(true)
    expect(list.has('192.0.2.6')).toBe(false)
    expect(list.has('11.0.0.1')).toBe(false)
    expect(list.has('')).toBe(false)
  })

  it('matches IPv6 addresses and CIDRs', () => {
    const list = new TrustedProxies(['fd00::/8', '2001:db8::1'])
    expect(list.has('fd12:3456::1')).toBe(true)
    expect(list.has('2001:db8::1')).toBe(true)
    expect(list.has('2001:db8::2')).toBe(false)
    expect(list.has('fe80::1')).toBe(false)
  })

  it('matches an IPv4 client seen as ::ffff:-mapped on a dual-stack socket', () => {
    const list = new TrustedProxies(['10.0.0.0/8'])
    expect(list.has('::ffff:10.1.2.3')).toBe(true)
    expect(list.has('::ffff:11.1.2.3')).toBe(false)
  })

  it('matches an IPv4 client against a ::ffff:-mapped entry', () => {
    const list = new TrustedProxies(['::ffff:127.0.0.1'])
    expect(list.has('127.0.0.1')).toBe(true)
    expect(list.has('::ffff:127.0.0.1')).toBe(true)
    expect(list.has('127.0.0.2')).toBe(false)
  })

  it('does not treat an IPv4 CIDR as covering unrelated IPv6 addresses', () => {
    const list = new TrustedProxies(['0.0.0.0/0'])
    expect(list.has('203.0.113.9')).toBe(true)
    expect(list.has('2001:db8::1')).toBe(false)
  })
})

describe('clientResponseHeaders', () => {
  it('drops hop-by-hop headers and the ones Connection names, and spreads repeated headers', () => {
    const out = clientResponseHeaders({
      'content-type': 'text/plain',
      'set-cookie': ['a=1; Path=/', 'b=2; Path=/'],
      connection: 'keep-alive, X-Secret',
      'keep-alive': 'timeout=5',
      'proxy-connection': 'keep-alive',
      'proxy-authenticate': 'Basic',
      'transfer-encoding': 'chunked',
      te: 'trailers',
      trailer: 'x-checksum',
      upgrade: 'h2c',
      'x-secret': 'hidden',
      'content-length': '12',
      missing: undefined,
    })
    expect(pairs(out)).toEqual([
      ['content-type', 'text/plain'],
      ['set-cookie', 'a=1; Path=/'],
      ['set-cookie', 'b=2; Path=/'],
      ['content-length', '12'],
    ])
  })

  it('reads Connection when it came as a list of lines', () => {
    const out = clientResponseHeaders({ connection: ['keep-alive', 'x-one'], 'x-one': '1', 'x-two': '2' })
    expect(pairs(out)).toEqual([['x-two', '2']])
  })

  it('drops a header named like the color header, so the upstream cannot speak for the proxy', () => {
    const out = clientResponseHeaders({ 'x-bluegreen-color': 'green', 'x-ok': '1' }, 'x-bluegreen-color')
    expect(pairs(out)).toEqual([['x-ok', '1']])
  })
})

describe('cookieValue', () => {
  const name = 'bluegreen_color'
  it.each([
    ['no header', undefined, undefined],
    ['an empty header', '', undefined],
    ['the only cookie', 'bluegreen_color=green', 'green'],
    ['the first cookie', 'bluegreen_color=green; a=1', 'green'],
    ['a later cookie', 'a=1; bluegreen_color=blue', 'blue'],
    ['a later cookie without a space', 'a=1;bluegreen_color=blue', 'blue'],
    ['extra spaces', 'a=1;   bluegreen_color=blue  ; b=2', 'blue'],
    ['a longer name ending in the name', 'xbluegreen_color=green; bluegreen_color=blue', 'blue'],
    ['only a longer name ending in the name', 'xbluegreen_color=green', undefined],
    ['a longer name starting with the name', 'bluegreen_color2=green', undefined],
    ['the name inside another value', 'a=bluegreen_color=green; bluegreen_color=blue', 'blue'],
    ['the name only inside another value', 'a=bluegreen_color=green', undefined],
    ['the name without a value', 'bluegreen_color; a=1', undefined],
    ['an empty value', 'bluegreen_color=; a=1', ''],
    ['a quoted value', 'bluegreen_color="green"', 'green'],
    ['the first of two', 'bluegreen_color=green; bluegreen_color=blue', 'green'],
    ['a trailing semicolon', 'bluegreen_color=green;', 'green'],
  ])('%s', (_label, header, expected) => {
    expect(cookieValue(header, name)).toBe(expected)
  })
})

describe('codingsBesidesChunked', () => {
  it('finds nothing in no header, or in chunked however it is spelled', () => {
    for (const value of [undefined, 'chunked', 'Chunked', ' CHUNKED\t'])
      expect(codingsBesidesChunked(value)).toBeUndefined()
  })

  it('names every coding before chunked, lower-cased, with empty list elements ignored', () => {
    expect(codingsBesidesChunked('gzip, chunked')).toBe('gzip')
    expect(codingsBesidesChunked('GZip,chunked')).toBe('gzip')
    // Two header lines reach the request handler joined with ", ".
    expect(codingsBesidesChunked('gzip, deflate, chunked')).toBe('gzip, deflate')
    expect(codingsBesidesChunked(', x-custom ,, chunked')).toBe('x-custom')
  })
})
