import { describe, expect, it } from 'vitest'
import type { Color, Weights } from '../../src/colors.ts'
import type { Balance, StickyConfig } from '../../src/config/types.ts'
import {
  bucketOf,
  chooseColor,
  chooseUpstream,
  parseStickyBucket,
  type RouteInput,
} from '../../src/routing/pick.ts'
import { type AvailablePool, buildSnapshot, type RoutingSnapshot } from '../../src/routing/snapshot.ts'
import type { Upstream } from '../../src/routing/upstream.ts'
import { initialState } from '../../src/state/state.ts'

// Routing is pure: a snapshot and a request's facts in, a color or an upstream out. The upstreams here are
// plain records with the two fields routing reads; no pools or sockets are needed to decide.

const cookie: StickyConfig = {
  mode: 'cookie',
  cookie: 'bluegreen_color',
  header: 'x-user-id',
  cookieMaxAge: 1000,
}
const header: StickyConfig = { ...cookie, mode: 'header' }
const none: StickyConfig = { ...cookie, mode: 'none' }

function upstream(color: Color, name: string, outstanding = 0): Upstream {
  return { color, url: name, outstanding } as unknown as Upstream
}

function snapshotWith(weights: Weights, active: Color = weights.green > weights.blue ? 'green' : 'blue') {
  const state = { ...initialState(active), weights }
  return buildSnapshot(
    state,
    { blue: [upstream('blue', 'b1')], green: [upstream('green', 'g1')] },
    { blue: 'round-robin', green: 'round-robin' },
  )
}

function poolOf(upstreams: Upstream[], balance: Balance = 'round-robin'): AvailablePool {
  return { color: 'blue', upstreams, balance, cursor: 0 }
}

const input = (extra: Partial<RouteInput> = {}): RouteInput => ({ random: 0.5, ...extra })

describe('chooseColor', () => {
  const allBlue = snapshotWith({ blue: 100, green: 0 })
  const allGreen = snapshotWith({ blue: 0, green: 100 })
  const split80 = snapshotWith({ blue: 80, green: 20 })

  it('sends everything to the only weighted color, whatever the cookie, sticky key or draw say', () => {
    for (const sticky of [cookie, header, none]) {
      for (const random of [0, 0.01, 0.5, 0.999]) {
        for (const extra of [
          {},
          { cookieColor: 'blue' as const },
          { cookieColor: 'green' as const },
          { cookieBucket: 0 },
          { cookieBucket: 99 },
        ]) {
          for (const stickyKey of [undefined, 'user-1', 'user-2']) {
            const request = input({ random, ...extra, ...(stickyKey ? { stickyKey } : {}) })
            expect(chooseColor(allGreen, sticky, request)).toEqual({ color: 'green' })
            expect(chooseColor(allBlue, sticky, request)).toEqual({ color: 'blue' })
          }
        }
      }
    }
  })

  it('lets the preview color win over weights, cookies and sticky keys, without setting a cookie', () => {
    for (const snapshot of [allBlue, allGreen, split80]) {
      for (const color of ['blue', 'green'] as const) {
        const other: Color = color === 'blue' ? 'green' : 'blue'
        expect(
          chooseColor(snapshot, cookie, input({ preview: color, cookieColor: other, random: 0 })),
        ).toEqual({ color })
        expect(chooseColor(snapshot, cookie, input({ preview: color, cookieBucket: 50 }))).toEqual({ color })
        expect(chooseColor(snapshot, cookie, input({ preview: color }))).toEqual({ color })
        expect(chooseColor(snapshot, header, input({ preview: color, stickyKey: 'user-1' }))).toEqual({
          color,
        })
      }
    }
  })

  it('draws by weight: random * 100 below green weight goes green', () => {
    expect(chooseColor(split80, none, input({ random: 0 })).color).toBe('green')
    expect(chooseColor(split80, none, input({ random: 0.1999 })).color).toBe('green')
    expect(chooseColor(split80, none, input({ random: 0.2 })).color).toBe('blue')
    expect(chooseColor(split80, none, input({ random: 0.9999 })).color).toBe('blue')
    // Over an even grid of draws the share is exactly the weight.
    for (const green of [1, 10, 20, 50, 90, 99]) {
      const snapshot = snapshotWith({ blue: 100 - green, green })
      let greens = 0
      for (let i = 0; i < 10_000; i++) {
        if (chooseColor(snapshot, none, input({ random: i / 10_000 })).color === 'green') greens++
      }
      expect(greens).toBe(green * 100)
    }
  })

  it('cookie mode: a new client during a split is given a random bucket, which draws its color by weight', () => {
    expect(chooseColor(split80, cookie, input({ random: 0 }))).toEqual({ color: 'green', cookieBucket: 0 })
    expect(chooseColor(split80, cookie, input({ random: 0.1999 }))).toEqual({
      color: 'green',
      cookieBucket: 19,
    })
    expect(chooseColor(split80, cookie, input({ random: 0.2 }))).toEqual({ color: 'blue', cookieBucket: 20 })
    expect(chooseColor(split80, cookie, input({ random: 0.9999 }))).toEqual({
      color: 'blue',
      cookieBucket: 99,
    })
    // Over an even grid of draws (midpoints, clear of rounding at bucket edges) every bucket comes up equally often.
    const given = new Array<number>(100).fill(0)
    for (let i = 0; i < 10_000; i++)
      given[chooseColor(split80, cookie, input({ random: (i + 0.5) / 10_000 })).cookieBucket!]!++
    expect(new Set(given)).toEqual(new Set([100]))
  })

  it('cookie mode: a returning client is routed by its bucket, whatever the draw, and is not sent the cookie again', () => {
    for (const random of [0, 0.5, 0.999]) {
      for (const bucket of [0, 19]) {
        expect(chooseColor(split80, cookie, input({ random, cookieBucket: bucket }))).toEqual({
          color: 'green',
        })
      }
      for (const bucket of [20, 99]) {
        expect(chooseColor(split80, cookie, input({ random, cookieBucket: bucket }))).toEqual({
          color: 'blue',
        })
      }
    }
  })

  it('cookie mode: moving weight toward a color moves only clients of the other color, and the share follows the weights', () => {
    const snapshots = Array.from({ length: 101 }, (_, green) => snapshotWith({ blue: 100 - green, green }))
    for (let bucket = 0; bucket < 100; bucket++) {
      let wasGreen = false
      for (let green = 1; green <= 99; green++) {
        const isGreen =
          chooseColor(snapshots[green]!, cookie, input({ cookieBucket: bucket })).color === 'green'
        // Raising green's weight never takes a green client back to blue.
        if (wasGreen) expect(isGreen, `bucket ${bucket} at ${green}`).toBe(true)
        wasGreen = isGreen
      }
    }
    // The case: clients given their buckets at 90/10 (an even grid of draws), back at 20/80.
    const at10 = snapshotWith({ blue: 90, green: 10 })
    const at80 = snapshotWith({ blue: 20, green: 80 })
    const clients = Array.from({ length: 1000 }, (_, i) =>
      chooseColor(at10, cookie, input({ random: (i + 0.5) / 1000 })),
    )
    expect(clients.filter((client) => client.color === 'green')).toHaveLength(100)
    const returning = clients.map((client) =>
      chooseColor(at80, cookie, input({ random: 0.99, cookieBucket: client.cookieBucket! })),
    )
    expect(returning.filter((client) => client.color === 'green')).toHaveLength(800)
    clients.forEach((client, index) => {
      if (client.color === 'green') expect(returning[index]!.color).toBe('green')
    })
  })

  it("cookie mode: a cookie from before buckets keeps its color and is given a bucket drawn in that color's range", () => {
    const split20 = snapshotWith({ blue: 20, green: 80 })
    for (const random of [0, 0.25, 0.5, 0.999]) {
      const green = chooseColor(split20, cookie, input({ random, cookieColor: 'green' }))
      expect(green.color).toBe('green')
      expect(green.cookieBucket).toBe(Math.floor(random * 80))
      const blue = chooseColor(split20, cookie, input({ random, cookieColor: 'blue' }))
      expect(blue.color).toBe('blue')
      expect(blue.cookieBucket).toBe(80 + Math.floor(random * 20))
      // With the bucket it is given, it comes back to the same color.
      for (const choice of [green, blue]) {
        expect(chooseColor(split20, cookie, input({ cookieBucket: choice.cookieBucket! })).color).toBe(
          choice.color,
        )
      }
    }
    // A split that gives its color the least weight possible still has a bucket for it.
    const edge = snapshotWith({ blue: 99, green: 1 })
    expect(chooseColor(edge, cookie, input({ random: 0.999, cookieColor: 'green' }))).toEqual({
      color: 'green',
      cookieBucket: 0,
    })
    expect(chooseColor(edge, cookie, input({ random: 0.999, cookieColor: 'blue' }))).toEqual({
      color: 'blue',
      cookieBucket: 99,
    })
  })

  it('other modes ignore the cookie and never ask to set one', () => {
    for (const sticky of [none, header]) {
      for (const extra of [{ cookieColor: 'green' as const }, { cookieBucket: 0 }]) {
        expect(chooseColor(split80, sticky, input({ ...extra, random: 0.9 }))).toEqual({ color: 'blue' })
      }
    }
  })

  it('header mode: the key decides, not the draw; a request without the key is drawn', () => {
    const key = 'user-42'
    const expected: Color = bucketOf(key) < 20 ? 'green' : 'blue'
    for (const random of [0, 0.3, 0.999]) {
      expect(chooseColor(split80, header, input({ stickyKey: key, random }))).toEqual({ color: expected })
    }
    expect(chooseColor(split80, header, input({ random: 0.1 })).color).toBe('green')
    expect(chooseColor(split80, header, input({ random: 0.9 })).color).toBe('blue')
  })

  it('header mode is monotonic: a key green at weight w stays green at every higher weight', () => {
    const keys = Array.from({ length: 5000 }, (_, i) => `user-${i}`)
    const snapshots = Array.from({ length: 101 }, (_, green) => snapshotWith({ blue: 100 - green, green }))
    const broken: string[] = []
    const greenAt = new Array<number>(101).fill(0)
    for (const key of keys) {
      let wasGreen = false
      for (let green = 0; green <= 100; green++) {
        const isGreen = chooseColor(snapshots[green]!, header, input({ stickyKey: key })).color === 'green'
        // Once green, always green as green's weight grows: raising it only moves blue clients over.
        if (wasGreen && !isGreen) broken.push(`${key} at green weight ${green}`)
        if (isGreen) greenAt[green]!++
        wasGreen = isGreen
      }
    }
    expect(broken).toEqual([])
    // Every key is blue at 0 and green at 100, and the share in between tracks the weight.
    expect(greenAt[0]).toBe(0)
    expect(greenAt[100]).toBe(keys.length)
    for (let green = 0; green <= 100; green++) {
      expect(Math.abs(greenAt[green]! / keys.length - green / 100), `at ${green}`).toBeLessThan(0.03)
    }
  })
})

describe('parseStickyBucket', () => {
  it('reads a bucket 0..99 and nothing else, so an old color cookie or garbage is not taken for one', () => {
    expect(['0', '7', '07', '42', '99'].map(parseStickyBucket)).toEqual([0, 7, 7, 42, 99])
    for (const value of [undefined, '', '100', '-1', '4.5', '1e1', ' 5', '0x1', 'blue', 'green']) {
      expect(parseStickyBucket(value), JSON.stringify(value)).toBeUndefined()
    }
  })
})

describe('bucketOf', () => {
  it('is stable and within 0..99', () => {
    for (const key of ['', 'a', 'user-1', 'ünïcödé', 'x'.repeat(1000)]) {
      const bucket = bucketOf(key)
      expect(Number.isInteger(bucket)).toBe(true)
      expect(bucket).toBeGreaterThanOrEqual(0)
      expect(bucket).toBeLessThan(100)
      expect(bucketOf(key)).toBe(bucket)
    }
    // Pinned: a bucket must not change between releases, or sticky clients would move on upgrade.
    expect(['user-1', 'user-2', '', 'alice'].map(bucketOf)).toEqual([0, 57, 61, 79])
  })

  it('spreads sequential keys evenly, so a weight w sends about w% of clients', () => {
    const counts = new Array<number>(100).fill(0)
    const total = 20_000
    for (let i = 0; i < total; i++) counts[bucketOf(`user-${i}`)]!++
    for (const weight of [5, 10, 20, 50, 80]) {
      const share = counts.slice(0, weight).reduce((sum, count) => sum + count, 0) / total
      // Binomial sd at 20,000 keys is at most 0.0036; 0.02 is more than 5 sd.
      expect(Math.abs(share - weight / 100)).toBeLessThan(0.02)
    }
  })
})

describe('chooseUpstream', () => {
  it('returns undefined for an empty pool', () => {
    expect(chooseUpstream(poolOf([]))).toBeUndefined()
    expect(chooseUpstream(poolOf([], 'least-outstanding'))).toBeUndefined()
  })

  it('round-robin visits every upstream in turn, evenly', () => {
    const upstreams = [upstream('blue', 'a'), upstream('blue', 'b'), upstream('blue', 'c')]
    const pool = poolOf(upstreams)
    const picks = Array.from({ length: 9 }, () => chooseUpstream(pool)!.url)
    expect(picks).toEqual(['a', 'b', 'c', 'a', 'b', 'c', 'a', 'b', 'c'])
    const counts = new Map<string, number>()
    for (let i = 0; i < 3000; i++) {
      const url = chooseUpstream(pool)!.url
      counts.set(url, (counts.get(url) ?? 0) + 1)
    }
    expect([...counts.values()]).toEqual([1000, 1000, 1000])
  })

  it('least-outstanding picks the least loaded upstream', () => {
    const upstreams = [upstream('blue', 'a', 5), upstream('blue', 'b', 1), upstream('blue', 'c', 3)]
    const pool = poolOf(upstreams, 'least-outstanding')
    for (let i = 0; i < 10; i++) expect(chooseUpstream(pool)!.url).toBe('b')
    upstreams[1]!.outstanding = 9
    for (let i = 0; i < 10; i++) expect(chooseUpstream(pool)!.url).toBe('c')
  })

  it('least-outstanding spreads ties instead of piling onto the first upstream', () => {
    const upstreams = [upstream('blue', 'a'), upstream('blue', 'b'), upstream('blue', 'c')]
    const pool = poolOf(upstreams, 'least-outstanding')
    const counts = new Map<string, number>()
    for (let i = 0; i < 300; i++) {
      const url = chooseUpstream(pool)!.url
      counts.set(url, (counts.get(url) ?? 0) + 1)
    }
    expect(counts).toEqual(
      new Map([
        ['a', 100],
        ['b', 100],
        ['c', 100],
      ]),
    )
    // Tied at the bottom while a third is busy: the two idle ones share the requests.
    upstreams[0]!.outstanding = 4
    counts.clear()
    for (let i = 0; i < 300; i++) {
      const url = chooseUpstream(pool)!.url
      counts.set(url, (counts.get(url) ?? 0) + 1)
    }
    expect(counts.get('a')).toBeUndefined()
    expect(counts.get('b')).toBe(150)
    expect(counts.get('c')).toBe(150)
  })

  it('least-outstanding balances as requests come and go', () => {
    const upstreams = [upstream('blue', 'a'), upstream('blue', 'b'), upstream('blue', 'c')]
    const pool = poolOf(upstreams, 'least-outstanding')
    // 30 requests that never finish end up 10 per upstream.
    for (let i = 0; i < 30; i++) chooseUpstream(pool)!.outstanding++
    expect(upstreams.map((entry) => entry.outstanding)).toEqual([10, 10, 10])
  })

  it('a round-robin retry takes the next upstream without moving the cursor', () => {
    const upstreams = [upstream('blue', 'dead'), upstream('blue', 'live')]
    const pool = poolOf(upstreams)
    const firsts: string[] = []
    for (let i = 0; i < 10; i++) {
      const first = chooseUpstream(pool)!
      firsts.push(first.url)
      if (first.url === 'dead') expect(chooseUpstream(pool, first)!.url).toBe('live')
    }
    // Retries did not line every request up with the dead upstream: first attempts still alternate.
    expect(firsts).toEqual(['dead', 'live', 'dead', 'live', 'dead', 'live', 'dead', 'live', 'dead', 'live'])
  })

  it('never returns the excluded upstream, in either policy', () => {
    for (const balance of ['round-robin', 'least-outstanding'] as const) {
      const upstreams = [upstream('blue', 'a'), upstream('blue', 'b', 7), upstream('blue', 'c')]
      const pool = poolOf(upstreams, balance)
      for (let i = 0; i < 20; i++) {
        expect(chooseUpstream(pool, upstreams[0])!.url).not.toBe('a')
        expect(chooseUpstream(pool, upstreams[2])!.url).not.toBe('c')
      }
      // With b the only other one, it is chosen even though it is the busiest.
      expect(chooseUpstream(poolOf([upstreams[1]!, upstreams[2]!], balance), upstreams[2])!.url).toBe('b')
      expect(chooseUpstream(poolOf([upstreams[0]!], balance), upstreams[0])).toBeUndefined()
      expect(chooseUpstream(poolOf([upstreams[0]!], balance), upstreams[1])!.url).toBe('a')
    }
  })

  it('a routing snapshot starts every pool with its own cursor, filtered by availability', () => {
    const blue = [upstream('blue', 'a'), upstream('blue', 'b')]
    const green = [upstream('green', 'g')]
    const snapshot: RoutingSnapshot = buildSnapshot(
      initialState('blue'),
      { blue, green },
      { blue: 'round-robin', green: 'least-outstanding' },
      (candidate) => candidate.url !== 'a',
    )
    expect(snapshot.pools.blue.upstreams.map((entry) => entry.url)).toEqual(['b'])
    expect(snapshot.pools.green.balance).toBe('least-outstanding')
    expect(Object.isFrozen(snapshot)).toBe(true)
    expect(chooseUpstream(snapshot.pools.blue)!.url).toBe('b')
  })
})
