import type { IncomingMessage } from 'node:http'
import { describe, expect, it } from 'vitest'
import { AdminGuard, hostName } from '../../src/admin/access.ts'
import { BlueGreenError } from '../../src/errors.ts'
import { silentLogger } from '../../src/log.ts'

// The guard decides from a request's headers and peer address alone, so plain records stand in for requests here;
// the real listener is exercised in test/integration/admin-security.test.ts. The clock is injected, so the
// throttle's escalation can be walked through minutes of time in no time.

const TOKEN = 'ci-token-0123456789'

function request(headers: Record<string, string>, address = '10.0.0.1'): IncomingMessage {
  return { headers, socket: { remoteAddress: address } } as unknown as IncomingMessage
}

function guardWith(
  options: { allowedHosts?: string[] | null; allowedOrigins?: string[]; tokens?: boolean } = {},
) {
  const clock = { now: 1_000_000 }
  const guard = new AdminGuard({
    tokens:
      options.tokens === false
        ? []
        : [
            { name: 'ci', token: TOKEN },
            { name: 'deploy', token: 'deploy-token-0123456789' },
          ],
    allowedHosts:
      options.allowedHosts === undefined ? ['localhost', '127.0.0.1', '::1'] : options.allowedHosts,
    allowedOrigins: options.allowedOrigins ?? [],
    logger: silentLogger(),
    now: () => clock.now,
  })
  return { guard, clock }
}

/** What authorize() made of a call: the token's name, or the refusal's status, code and Retry-After. */
function attempt(guard: AdminGuard, token: string, address = '10.0.0.1') {
  try {
    return { name: guard.authorize(request({ authorization: `Bearer ${token}` }, address)) }
  } catch (error) {
    if (!(error instanceof BlueGreenError)) throw error
    const retryAfter = (error.details as { retryAfter?: number } | undefined)?.retryAfter
    return { status: error.status, code: error.code, retryAfter }
  }
}

const unauthorized = { status: 401, code: 'BG_UNAUTHORIZED', retryAfter: undefined }
const blockedFor = (seconds: number) => ({ status: 429, code: 'BG_TOO_MANY_ATTEMPTS', retryAfter: seconds })

describe('AdminGuard throttling', () => {
  it('lets 5 failures through, then blocks for 1 s, doubling with each failure after a block, up to 60 s', () => {
    const { guard, clock } = guardWith()
    for (let i = 0; i < 5; i++) expect(attempt(guard, 'wrong')).toEqual(unauthorized)
    // Blocked, whatever it sends: a right token must not tell a guesser that it was right.
    expect(attempt(guard, TOKEN)).toEqual(blockedFor(1))
    clock.now += 999
    expect(attempt(guard, TOKEN)).toEqual(blockedFor(1))
    const blocks: number[] = []
    for (let i = 0; i < 9; i++) {
      // Each block waited out exactly, then one more wrong guess.
      const blocked = attempt(guard, 'wrong')
      expect(blocked.status).toBe(429)
      clock.now += blocked.retryAfter! * 1000
      expect(attempt(guard, 'wrong')).toEqual(unauthorized)
      blocks.push(attempt(guard, 'wrong').retryAfter!)
    }
    expect(blocks).toEqual([2, 4, 8, 16, 32, 60, 60, 60, 60])
  })

  it('stays at the longest block for an attacker who waits each block out', () => {
    const { guard, clock } = guardWith()
    for (let i = 0; i < 5; i++) attempt(guard, 'wrong')
    // Walk up to the 60 s cap, one failure per block.
    for (let block = 1; block < 60; block = Math.min(block * 2, 60)) {
      clock.now += block * 1000
      attempt(guard, 'wrong')
    }
    expect(attempt(guard, 'wrong')).toEqual(blockedFor(60))
    for (let i = 0; i < 3; i++) {
      clock.now += 60_000 + 1
      // One guess per minute, not five free ones again.
      expect(attempt(guard, 'wrong')).toEqual(unauthorized)
      expect(attempt(guard, 'wrong')).toEqual(blockedFor(60))
    }
  })

  it('resets on a success, and forgives failures spread wider than the longest block', () => {
    const { guard, clock } = guardWith()
    for (let i = 0; i < 5; i++) attempt(guard, 'wrong')
    clock.now += 1000
    expect(attempt(guard, TOKEN)).toEqual({ name: 'ci' })
    for (let i = 0; i < 4; i++) expect(attempt(guard, 'wrong')).toEqual(unauthorized)
    expect(attempt(guard, 'deploy-token-0123456789')).toEqual({ name: 'deploy' })

    // Four failures, a long quiet spell, four more: a typo now and then never blocks anyone.
    for (let i = 0; i < 4; i++) attempt(guard, 'wrong')
    clock.now += 60_001
    for (let i = 0; i < 4; i++) expect(attempt(guard, 'wrong')).toEqual(unauthorized)
    expect(attempt(guard, TOKEN)).toEqual({ name: 'ci' })
  })

  it('counts per address: one address blocked does not block another', () => {
    const { guard } = guardWith()
    for (let i = 0; i < 5; i++) attempt(guard, 'wrong', '10.0.0.1')
    expect(attempt(guard, TOKEN, '10.0.0.1').status).toBe(429)
    expect(attempt(guard, TOKEN, '10.0.0.2')).toEqual({ name: 'ci' })
    expect(attempt(guard, TOKEN, '::ffff:10.0.0.3')).toEqual({ name: 'ci' })
  })

  it('tracks at most 10 000 addresses, forgetting the one that failed longest ago first', () => {
    const { guard } = guardWith()
    for (let i = 0; i < 5; i++) attempt(guard, 'wrong', 'blocked')
    const others = (from: number, to: number) => {
      for (let i = from; i < to; i++) attempt(guard, 'wrong', `other-${i}`)
    }
    others(0, 9_999)
    // 10 000 tracked: still remembered.
    expect(attempt(guard, TOKEN, 'blocked').status).toBe(429)
    others(9_999, 10_000)
    // One more address pushed the oldest one out: the map does not grow without bound.
    expect(attempt(guard, TOKEN, 'blocked')).toEqual({ name: 'ci' })
    // The others are all still tracked: the next-oldest one is the next to go.
    for (let i = 0; i < 4; i++) expect(attempt(guard, 'wrong', 'other-1')).toEqual(unauthorized)
    expect(attempt(guard, TOKEN, 'other-1').status).toBe(429)
  })

  it('does not throttle without tokens: there is nothing to guess', () => {
    const { guard } = guardWith({ tokens: false })
    for (let i = 0; i < 20; i++) expect(attempt(guard, 'anything')).toEqual({ name: undefined })
  })
})

describe('AdminGuard tokens', () => {
  it('names the token that matched, and accepts any case of the scheme and extra spaces', () => {
    const { guard } = guardWith()
    const name = (authorization: string) => guard.authorize(request({ authorization }))
    expect(name(`Bearer ${TOKEN}`)).toBe('ci')
    expect(name('bearer deploy-token-0123456789')).toBe('deploy')
    expect(name(`BEARER   ${TOKEN}  `)).toBe('ci')
  })

  it('refuses near misses with 401', () => {
    const { guard } = guardWith()
    const wrong = ['', 'Bearer', `Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}`, `Basic ${TOKEN}`, TOKEN]
    wrong.forEach((authorization, index) => {
      expect(() => guard.authorize(request({ authorization }, `10.1.0.${index}`))).toThrow(
        expect.objectContaining({ code: 'BG_UNAUTHORIZED', status: 401 }),
      )
    })
  })
})

describe('AdminGuard Host and Origin', () => {
  it('answers only to allowed host names, with or without a port', () => {
    const { guard } = guardWith()
    for (const host of ['localhost:9090', '127.0.0.1:9090', '[::1]:9090', 'LOCALHOST', '127.0.0.1']) {
      expect(() => guard.checkHost(request({ host })), host).not.toThrow()
    }
    for (const host of [
      'evil.example',
      'evil.example:9090',
      'localhost.evil.example',
      'user@localhost',
      '',
    ]) {
      expect(() => guard.checkHost(request(host ? { host } : {})), host).toThrow(
        expect.objectContaining({ code: 'BG_FORBIDDEN', status: 403 }),
      )
    }
    // A wildcard listener without a list answers to any host.
    expect(() =>
      guardWith({ allowedHosts: null }).guard.checkHost(request({ host: 'evil.example' })),
    ).not.toThrow()
  })

  it('answers loopback names from a loopback peer even when the list leaves them out (the local CLI)', () => {
    const { guard } = guardWith({ allowedHosts: ['admin.internal'] })
    for (const address of ['127.0.0.1', '::1', '::ffff:127.0.0.1', '127.0.0.2']) {
      for (const host of ['127.0.0.1:9090', 'localhost:9090', '[::1]:9090', 'localhost']) {
        expect(() => guard.checkHost(request({ host }, address)), `${host} from ${address}`).not.toThrow()
      }
    }
    // From another peer a loopback name proves nothing: only the list counts.
    for (const host of ['127.0.0.1:9090', 'localhost']) {
      expect(() => guard.checkHost(request({ host }, '10.0.0.1')), host).toThrow(
        expect.objectContaining({ code: 'BG_FORBIDDEN' }),
      )
    }
    // From a loopback peer a foreign name is still refused: that is what DNS rebinding looks like.
    expect(() => guard.checkHost(request({ host: 'evil.example' }, '127.0.0.1'))).toThrow(
      expect.objectContaining({ code: 'BG_FORBIDDEN' }),
    )
  })

  it('refuses a foreign Origin and cross-site fetches before looking at the token', () => {
    const { guard } = guardWith({ allowedOrigins: ['https://ops.example'] })
    const auth = { authorization: `Bearer ${TOKEN}` }
    expect(guard.authorize(request({ ...auth, origin: 'https://ops.example' }))).toBe('ci')
    expect(guard.authorize(request({ ...auth, 'sec-fetch-site': 'same-origin' }))).toBe('ci')
    const foreign: Record<string, string>[] = [
      { origin: 'https://evil.example' },
      { origin: 'null' },
      { origin: 'https://ops.example.evil.example' },
      { origin: 'http://ops.example' },
      { 'sec-fetch-site': 'cross-site' },
    ]
    for (const headers of foreign) {
      expect(() => guard.authorize(request({ ...auth, ...headers })), JSON.stringify(headers)).toThrow(
        expect.objectContaining({ code: 'BG_FORBIDDEN', status: 403 }),
      )
    }
  })

  it("accepts the console's own origin (the Origin naming the Host the call was sent to), and no other", () => {
    const { guard } = guardWith({ tokens: false })
    const own = { host: '127.0.0.1:9090', origin: 'http://127.0.0.1:9090', 'sec-fetch-site': 'same-origin' }
    expect(guard.authorize(request(own))).toBeUndefined()
    expect(
      guard.authorize(request({ host: 'LOCALHOST:9090', origin: 'http://localhost:9090' })),
    ).toBeUndefined()
    const others: Record<string, string>[] = [
      { host: '127.0.0.1:9090', origin: 'http://127.0.0.1:9091' },
      { host: '127.0.0.1:9090', origin: 'http://localhost:9090' },
      { host: '127.0.0.1:9090', origin: 'ftp://127.0.0.1:9090' },
      { host: '127.0.0.1:9090', origin: 'null' },
      { origin: 'http://127.0.0.1:9090' },
    ]
    for (const headers of others) {
      expect(() => guard.authorize(request(headers)), JSON.stringify(headers)).toThrow(
        expect.objectContaining({ code: 'BG_FORBIDDEN', status: 403 }),
      )
    }
  })

  it('without an Origin, judges by the Referer: a page elsewhere is refused, its own or an allowed one is not', () => {
    const { guard } = guardWith({ tokens: false, allowedOrigins: ['https://ops.example'] })
    const host = { host: '127.0.0.1:9090' }
    for (const referer of ['http://127.0.0.1:9090/', 'https://ops.example/deploys?id=3']) {
      expect(guard.authorize(request({ ...host, referer })), referer).toBeUndefined()
    }
    for (const referer of [
      'https://evil.example/attack.html',
      'http://127.0.0.1:9091/',
      'about:blank',
      'not a url',
    ]) {
      expect(() => guard.authorize(request({ ...host, referer })), referer).toThrow(
        expect.objectContaining({ code: 'BG_FORBIDDEN', status: 403 }),
      )
    }
  })

  it('hostName strips the port and brackets and lower-cases; anything but a host is undefined', () => {
    expect(hostName('[::1]:9090')).toBe('::1')
    expect(hostName('Admin.Internal:80')).toBe('admin.internal')
    expect(hostName('127.0.0.1')).toBe('127.0.0.1')
    expect(hostName(undefined)).toBeUndefined()
    expect(hostName('a@b')).toBeUndefined()
    expect(hostName('host/path')).toBeUndefined()
  })
})
