import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { bucketOf } from '../../src/routing/pick.ts'
import { adminPost, echoUpstream, startProxy, type TestProxy, type TestServer } from '../helpers/servers.ts'

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

function cookieColor(setCookie: string | null): Color | undefined {
  const match = /^bluegreen_color=(blue|green);/.exec(setCookie ?? '')
  return match?.[1] as Color | undefined
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

  it('splits cookie-less requests 80/20 within a tolerance, and tells each new client its color', async () => {
    proxy = await startProxy({ blue: [blue.url], green: [green.url] })
    expect((await adminPost(proxy.admin, '/weights', { blue: 80, green: 20 })).status).toBe(200)
    const total = 2000
    const answers = await inParallel(total, 16, () => get(`${proxy!.url}/split`))
    let greens = 0
    for (const answer of answers) {
      expect(answer.status).toBe(200)
      // The color header, the upstream that answered and the cookie all agree.
      expect(answer.upstream).toBe(answer.color)
      expect(cookieColor(answer.setCookie)).toBe(answer.color)
      expect(answer.setCookie).toMatch(/; Path=\/; Max-Age=86400; HttpOnly; SameSite=Lax$/)
      if (answer.color === 'green') greens++
    }
    // Green count ~ Binomial(2000, 0.2): mean 400, sd sqrt(2000 * 0.2 * 0.8) = 17.9. A band of +-100 is 5.59 sd,
    // so a correct proxy fails this with probability about 2.3e-8.
    expect(greens).toBeGreaterThanOrEqual(300)
    expect(greens).toBeLessThanOrEqual(500)
  })

  it('keeps cookie clients on their color across a weight change 20 -> 50 and splits new ones by the new weights', async () => {
    proxy = await startProxy({ blue: [blue.url], green: [green.url] })
    expect((await adminPost(proxy.admin, '/weights', { blue: 80, green: 20 })).status).toBe(200)
    const clients = await inParallel(400, 16, () => get(`${proxy!.url}/first`))
    const cookies = clients.map((answer) => cookieColor(answer.setCookie)!)
    expect(new Set(cookies)).toEqual(new Set(['blue', 'green']))

    const changed = await adminPost(proxy.admin, '/weights', { blue: 50, green: 50 })
    expect(changed.status).toBe(200)
    expect(changed.body.weights).toEqual({ blue: 50, green: 50 })

    const returning = await inParallel(cookies.length, 16, (index) =>
      get(`${proxy!.url}/again`, { cookie: `theme=dark; bluegreen_color=${cookies[index]}; other=1` }),
    )
    returning.forEach((answer, index) => {
      expect(answer.color).toBe(cookies[index])
      expect(answer.upstream).toBe(cookies[index])
      // A client that already has its color is not sent the cookie again.
      expect(answer.setCookie).toBeNull()
    })

    // New clients: Binomial(1000, 0.5), sd 15.8; +-85 is 5.38 sd, so a false failure has probability ~8e-8.
    const fresh = await inParallel(1000, 16, () => get(`${proxy!.url}/new`))
    const greens = fresh.filter((answer) => answer.color === 'green').length
    expect(greens).toBeGreaterThanOrEqual(415)
    expect(greens).toBeLessThanOrEqual(585)

    // A cookie with garbage in it is a new client.
    const garbage = await get(`${proxy.url}/garbage`, { cookie: 'bluegreen_color=purple' })
    expect(cookieColor(garbage.setCookie)).toBe(garbage.color)

    // Back to all-blue: everyone, green cookie or not, goes blue and no cookie is set.
    expect((await adminPost(proxy.admin, '/switch', { to: 'blue' })).status).toBe(200)
    const after = await get(`${proxy.url}/done`, { cookie: 'bluegreen_color=green' })
    expect(after.color).toBe('blue')
    expect(after.setCookie).toBeNull()
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
