import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { bucketOf } from '../../src/routing/pick.ts'
import { adminPost } from '../helpers/admin.ts'
import { echoUpstream, startProxy, type TestProxy, type TestServer } from '../helpers/servers.ts'

type Color = 'blue' | 'green'

interface Answer {
  status: number
  color: string | null
  upstream: string | null
  setCookie: string | null
  body: Record<string, unknown>
}

async function get(url: string, headers: Record<string, string> = {}): Promise<Answer> {
  const response = await fetch(url, { headers })
  return {
    status: response.status,
    color: response.headers.get('x-bluegreen-color'),
    upstream: response.headers.get('x-upstream'),
    setCookie: response.headers.get('set-cookie'),
    body: (await response.json()) as Record<string, unknown>,
  }
}

/** Runs `total` calls of `task`, at most `concurrency` at a time, and returns the results in order. */
async function inParallel<T>(total: number, concurrency: number, task: (index: number) => Promise<T>) {
  const results: T[] = new Array(total)
  let next = 0
  const worker = async () => {
    while (next < total) {
      const index = next++
      results[index] = await task(index)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return results
}

/** The value a Set-Cookie gives the sticky cookie: the client's bucket. */
function stickyCookie(setCookie: string | null): string | undefined {
  return /^bluegreen_color=([^;]*);/.exec(setCookie ?? '')?.[1]
}

/** The color a Set-Cookie's bucket means at green weight `green`: a bucket below it is green. */
function bucketColor(setCookie: string | null, green: number): Color | undefined {
  const value = stickyCookie(setCookie)
  if (value === undefined || !/^\d{1,2}$/.test(value)) return undefined
  return Number(value) < green ? 'green' : 'blue'
}

/**
 * The share of green answers is what a weight of `p` makes of independent clients, within sampling error: the
 * count is Binomial(n, p), and a band of 5 standard deviations either side fails a correct proxy with
 * probability under 6e-7 (normal approximation; n p (1 - p) >= 36 in every use here).
 */
function expectShare(answers: readonly Answer[], p: number) {
  const n = answers.length
  const greens = answers.filter((answer) => answer.color === 'green').length
  const band = 5 * Math.sqrt(n * p * (1 - p))
  expect(greens, `${greens} of ${n} green, expected ${n * p} +- ${band.toFixed(1)}`).toBeGreaterThanOrEqual(
    n * p - band,
  )
  expect(greens, `${greens} of ${n} green, expected ${n * p} +- ${band.toFixed(1)}`).toBeLessThanOrEqual(
    n * p + band,
  )
}

describe('routing', () => {
  let blue: TestServer
  let green: TestServer
  let proxy: TestProxy | undefined
  beforeAll(async () => {
    blue = await echoUpstream('blue')
    green = await echoUpstream('green')
  })
  afterEach(async () => {
    await proxy?.close()
    proxy = undefined
  })
  afterAll(async () => {
    await blue?.close()
    await green?.close()
  })

  it('splits cookie-less requests 80/20 within a tolerance, and gives each new client a bucket that agrees with its color', async () => {
    proxy = await startProxy({ blue: [blue.url], green: [green.url] })
    expect((await adminPost(proxy.admin, '/weights', { blue: 80, green: 20 })).status).toBe(200)
    const total = 2000
    const answers = await inParallel(total, 16, () => get(`${proxy!.url}/split`))
    let greens = 0
    for (const answer of answers) {
      expect(answer.status).toBe(200)
      // The color header, the upstream that answered and the cookie all agree.
      expect(answer.upstream).toBe(answer.color)
      expect(bucketColor(answer.setCookie, 20)).toBe(answer.color)
      expect(answer.setCookie).toMatch(/; Path=\/; Max-Age=86400; HttpOnly; SameSite=Lax$/)
      if (answer.color === 'green') greens++
    }
    // Green count ~ Binomial(2000, 0.2): mean 400, sd sqrt(2000 * 0.2 * 0.8) = 17.9. A band of +-100 is 5.59 sd,
    // so a correct proxy fails this with probability about 2.3e-8.
    expect(greens).toBeGreaterThanOrEqual(300)
    expect(greens).toBeLessThanOrEqual(500)
  })

  it('cookie clients follow the weights: first seen at 90/10, moved to 20/80, about 80% of those returning are green', async () => {
    proxy = await startProxy({ blue: [blue.url], green: [green.url] })
    expect((await adminPost(proxy.admin, '/weights', { blue: 90, green: 10 })).status).toBe(200)
    const clients = 400
    const first = await inParallel(clients, 16, () => get(`${proxy!.url}/first`))
    const cookies = first.map((answer) => stickyCookie(answer.setCookie))
    for (const cookie of cookies) expect(cookie).toBeDefined()
    expectShare(first, 0.1)

    expect((await adminPost(proxy.admin, '/weights', { blue: 20, green: 80 })).status).toBe(200)
    const back = (path: string) =>
      inParallel(clients, 16, (index) =>
        get(`${proxy!.url}/${path}`, { cookie: `theme=dark; bluegreen_color=${cookies[index]}; other=1` }),
      )
    const at80 = await back('again')
    at80.forEach((answer, index) => {
      expect(answer.upstream).toBe(answer.color)
      // Raising green's weight moves blue clients only: everyone green at 10% is green at 80%.
      if (first[index]!.color === 'green') expect(answer.color).toBe('green')
      // A client that already has its cookie is not sent one again.
      expect(answer.setCookie).toBeNull()
    })
    expectShare(at80, 0.8)

    // And lowering it moves green clients only, back to blue.
    expect((await adminPost(proxy.admin, '/weights', { blue: 50, green: 50 })).status).toBe(200)
    const at50 = await back('once-more')
    at50.forEach((answer, index) => {
      if (at80[index]!.color === 'blue') expect(answer.color).toBe('blue')
    })
    expectShare(at50, 0.5)
  })

  it('cookie clients from before buckets keep their color, and get a bucket in its range; garbage is a new client', async () => {
    proxy = await startProxy({ blue: [blue.url], green: [green.url] })
    expect((await adminPost(proxy.admin, '/weights', { blue: 20, green: 80 })).status).toBe(200)
    for (const color of ['blue', 'green'] as const) {
      const answers = await inParallel(50, 8, () =>
        get(`${proxy!.url}/old`, { cookie: `bluegreen_color=${color}` }),
      )
      for (const answer of answers) {
        expect(answer.color).toBe(color)
        const bucket = Number(stickyCookie(answer.setCookie))
        // Green's range at 20/80 is buckets 0..79, blue's 80..99.
        if (color === 'green') expect(bucket).toBeLessThan(80)
        else expect(bucket).toBeGreaterThanOrEqual(80)
        expect(bucket).toBeLessThanOrEqual(99)
        // With the new cookie it comes back to the same color, and is not sent another.
        const again = await get(`${proxy!.url}/old`, { cookie: `bluegreen_color=${bucket}` })
        expect(again.color).toBe(color)
        expect(again.setCookie).toBeNull()
      }
    }

    // A cookie with garbage in it (not a color, not a bucket 0..99) is a new client.
    for (const garbage of ['purple', '100', '-1', '4.5', '']) {
      const answer = await get(`${proxy.url}/garbage`, { cookie: `bluegreen_color=${garbage}` })
      expect(bucketColor(answer.setCookie, 80), garbage).toBe(answer.color)
    }

    // Back to all-blue: everyone, whatever the cookie says, goes blue and no cookie is set.
    expect((await adminPost(proxy.admin, '/switch', { to: 'blue' })).status).toBe(200)
    for (const cookie of ['green', '0', '79']) {
      const after = await get(`${proxy.url}/done`, { cookie: `bluegreen_color=${cookie}` })
      expect(after.color).toBe('blue')
      expect(after.setCookie).toBeNull()
    }
  })

  it('header mode: the sticky header decides, the same key always lands on the same color, monotonic in weight', async () => {
    proxy = await startProxy(
      { blue: [blue.url], green: [green.url] },
      { routing: { sticky: { mode: 'header', header: 'X-Tenant' } } },
    )
    expect((await adminPost(proxy.admin, '/weights', { blue: 80, green: 20 })).status).toBe(200)
    const keys = Array.from({ length: 200 }, (_, i) => `tenant-${i}`)
    const at20 = await inParallel(keys.length, 16, (index) =>
      get(`${proxy!.url}/h`, { 'x-tenant': keys[index]! }),
    )
    at20.forEach((answer, index) => {
      expect(answer.color).toBe(bucketOf(keys[index]!) < 20 ? 'green' : 'blue')
      expect(answer.setCookie).toBeNull()
    })
    // Asked again (and with a cookie that says otherwise), each key gets the same color.
    const again = await inParallel(keys.length, 16, (index) =>
      get(`${proxy!.url}/h`, { 'x-tenant': keys[index]!, cookie: 'bluegreen_color=green' }),
    )
    again.forEach((answer, index) => {
      expect(answer.color).toBe(at20[index]!.color)
    })

    expect((await adminPost(proxy.admin, '/weights', { blue: 50, green: 50 })).status).toBe(200)
    const at50 = await inParallel(keys.length, 16, (index) =>
      get(`${proxy!.url}/h`, { 'x-tenant': keys[index]! }),
    )
    let moved = 0
    at50.forEach((answer, index) => {
      if (at20[index]!.color === 'green') expect(answer.color).toBe('green')
      else if (answer.color === 'green') moved++
      expect(answer.color).toBe(bucketOf(keys[index]!) < 50 ? 'green' : 'blue')
    })
    expect(moved).toBeGreaterThan(0)

    // Without the header, or with it empty, a request is drawn by weight: both colors show up (all 200 alike
    // would happen with probability 2 * 0.5^200).
    for (const headers of [{}, { 'x-tenant': '' }] as Record<string, string>[]) {
      const drawn = await inParallel(200, 16, () => get(`${proxy!.url}/h`, headers))
      expect(new Set(drawn.map((answer) => answer.color))).toEqual(new Set(['blue', 'green']))
    }
  })

  it('round-robins evenly across three upstreams of one color', async () => {
    const extra = await Promise.all([echoUpstream('blue-2'), echoUpstream('blue-3')])
    try {
      proxy = await startProxy({ blue: [blue.url, extra[0].url, extra[1].url], green: [green.url] })
      const answers = await inParallel(300, 8, () => get(`${proxy!.url}/rr`))
      const counts = new Map<string, number>()
      for (const answer of answers) {
        expect(answer.color).toBe('blue')
        counts.set(answer.upstream!, (counts.get(answer.upstream!) ?? 0) + 1)
      }
      expect(Object.fromEntries(counts)).toEqual({ blue: 100, 'blue-2': 100, 'blue-3': 100 })
    } finally {
      await proxy?.close()
      proxy = undefined
      await Promise.all(extra.map((server) => server.close()))
    }
  })

  describe('preview', () => {
    const preview = { routing: { preview: { header: 'x-bluegreen-preview' } } }

    it('sends a request to the named color, over weights and cookies', async () => {
      proxy = await startProxy({ blue: [blue.url], green: [green.url] }, preview)
      for (const color of ['blue', 'green'] as const) {
        const answer = await get(`${proxy.url}/p`, { 'x-bluegreen-preview': color })
        expect(answer.status).toBe(200)
        expect(answer.color).toBe(color)
        expect(answer.upstream).toBe(color)
        expect(answer.setCookie).toBeNull()
      }
      expect((await adminPost(proxy.admin, '/weights', { blue: 80, green: 20 })).status).toBe(200)
      const answers = await inParallel(50, 8, () =>
        get(`${proxy!.url}/p`, { 'x-bluegreen-preview': 'green', cookie: 'bluegreen_color=blue' }),
      )
      for (const answer of answers) {
        expect(answer.color).toBe('green')
        expect(answer.setCookie).toBeNull()
      }
      // Without the header, the normal route.
      expect((await get(`${proxy.url}/p`, { cookie: 'bluegreen_color=blue' })).color).toBe('blue')
    })

    it('answers 503 BG_NO_HEALTHY_UPSTREAM when the previewed pool is empty, never the active color', async () => {
      proxy = await startProxy({ blue: [blue.url], green: [] }, preview)
      const answer = await get(`${proxy.url}/p`, { 'x-bluegreen-preview': 'green' })
      expect(answer.status).toBe(503)
      expect(answer.upstream).toBeNull()
      expect((answer.body.error as { code: string }).code).toBe('BG_NO_HEALTHY_UPSTREAM')
      expect((await get(`${proxy.url}/p`)).color).toBe('blue')
    })

    it('answers 400 BG_BAD_PREVIEW for a value other than blue or green', async () => {
      proxy = await startProxy({ blue: [blue.url], green: [green.url] }, preview)
      for (const value of ['purple', 'Green', '', 'blue, green']) {
        const answer = await get(`${proxy.url}/p`, { 'x-bluegreen-preview': value })
        expect(answer.status, JSON.stringify(value)).toBe(400)
        expect(answer.upstream).toBeNull()
        expect((answer.body.error as { code: string }).code).toBe('BG_BAD_PREVIEW')
      }
    })

    it('is ignored when preview routing is not configured', async () => {
      proxy = await startProxy({ blue: [blue.url], green: [green.url] })
      for (const value of ['green', 'purple']) {
        const answer = await get(`${proxy.url}/p`, { 'x-bluegreen-preview': value })
        expect(answer.status).toBe(200)
        expect(answer.color).toBe('blue')
        // The header is the application's business then, and reaches it untouched.
        expect((answer.body.headers as Record<string, string>)['x-bluegreen-preview']).toBe(value)
      }
    })
  })
})
