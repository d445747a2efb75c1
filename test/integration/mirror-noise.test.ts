import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminGet, adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { startProxy, startServer, type TestProxy, type TestServer } from '../helpers/servers.ts'

// The first copies of a route, while its noise is still being learned (README "Mirroring", issue 17): blue and
// green answer the same JSON but for a random `id` and a timestamp on every answer, which is noise. No copy may
// count that field as a difference, however its noise sample (the live color asked a second time) turns out.

interface Upstream {
  server: TestServer
  /** Noise samples (mirrored requests to the live color) on these paths wait this long: past the mirror timeout. */
  slowSamples: Map<string, number>
  /** Mirrored requests (the live color's noise samples, the idle color's copies) on these paths are answered 500. */
  failMirrored: Set<string>
}

async function noisyUpstream(): Promise<Upstream> {
  const slowSamples = new Map<string, number>()
  const failMirrored = new Set<string>()
  const server = await startServer(async (req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    const path = (req.url ?? '/').split('?')[0]!
    const delay = req.headers['x-bluegreen-mirror'] === '1' ? slowSamples.get(path) : undefined
    if (delay !== undefined) await sleep(delay)
    const failed = req.headers['x-bluegreen-mirror'] === '1' && failMirrored.has(path)
    res.writeHead(failed ? 500 : 200, { 'content-type': 'application/json' })
    res.end(
      JSON.stringify({ path, items: ['a', 'b'], id: randomUUID(), at: process.hrtime.bigint().toString() }),
    )
  })
  return { server, slowSamples, failMirrored }
}

function get(url: string): Promise<{ status: number; color: string | undefined; ms: number }> {
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      res.resume()
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          color: res.headers['x-bluegreen-color'] as string | undefined,
          ms: performance.now() - started,
        }),
      )
    })
    req.on('error', reject)
    req.end()
  })
}

interface MirrorStatus {
  inFlight: number
  results: Record<'match' | 'mismatch' | 'error' | 'dropped', number>
  dropped: Record<string, number>
  window: Record<'blue' | 'green', { compared: number; mismatched: number }>
  noise: { noisy: { route: string; samples: number; fields: string[] }[] }
}

const total = (status: MirrorStatus) => Object.values(status.results).reduce((sum, value) => sum + value, 0)

describe('mirroring: the first copies of a route while its noise is being learned', () => {
  let blue: Upstream
  let green: Upstream
  let proxy: TestProxy

  const status = async () => (await adminGet<MirrorStatus>(proxy.admin, '/mirror')).body
  const settled = (count: number) =>
    eventually(
      async () => {
        const now = await status()
        return now.inFlight === 0 && total(now) >= count && now
      },
      { timeout: 10_000, message: `${count} mirrored requests settled` },
    )

  beforeAll(async () => {
    blue = await noisyUpstream()
    green = await noisyUpstream()
    proxy = await startProxy(
      { blue: [blue.server.url], green: [green.server.url] },
      { mirror: { timeout: '1s', maxInFlight: 200, compare: { noiseSampleRate: 0 } } },
    )
    expect((await adminPost(proxy.admin, '/mirror', { percent: 100 })).status).toBe(200)
  })

  afterAll(async () => {
    await proxy?.close()
    await blue?.server.close()
    await green?.server.close()
  })

  it('copies of new routes sent all at once are never counted as mismatches for the noisy fields', async () => {
    const before = await status()
    const requests: Promise<unknown>[] = []
    for (let route = 0; route < 10; route++)
      for (let copy = 0; copy < 4; copy++) requests.push(get(`${proxy.url}/burst/${route}?copy=${copy}`))
    await Promise.all(requests)
    const after = await settled(total(before) + 40)
    expect(after.results.mismatch - before.results.mismatch).toBe(0)
    expect(after.results.match - before.results.match).toBe(40)
    const burst = after.noise.noisy.filter((route) => route.route.startsWith('GET /burst/'))
    expect(burst).toHaveLength(10)
    for (const route of burst) expect(route.fields.sort()).toEqual(['$.at', '$.id'])
  })

  it('a copy of a new route whose noise sample gets no answer is not compared, neither match nor mismatch', async () => {
    blue.slowSamples.set('/late', 3_000)
    const before = await status()
    const answers = await Promise.all([get(`${proxy.url}/late`), get(`${proxy.url}/late?again=1`)])
    // The client is answered by blue at once: the copies and the samples are not waited for.
    for (const answer of answers) {
      expect(answer).toMatchObject({ status: 200, color: 'blue' })
      expect(answer.ms).toBeLessThan(3_000)
    }
    const after = await settled(total(before) + 2)
    expect(after.results.mismatch - before.results.mismatch).toBe(0)
    expect(after.results.match - before.results.match).toBe(0)
    expect(after.results.dropped - before.results.dropped).toBe(2)
    expect(after.dropped.noiseUnknown! - (before.dropped.noiseUnknown ?? 0)).toBe(2)
    expect(after.window.green.compared - before.window.green.compared).toBe(0)

    // Once a sample is answered the route's noise is known, and its copies are compared again.
    blue.slowSamples.delete('/late')
    await get(`${proxy.url}/late`)
    const learned = await settled(total(after) + 1)
    expect(learned.results.match - after.results.match).toBe(1)
    expect(learned.noise.noisy.find((route) => route.route === 'GET /late')?.fields.sort()).toEqual([
      '$.at',
      '$.id',
    ])
    // With the noise known, a sample that gets no answer leaves the copy compared with what was learned.
    blue.slowSamples.set('/late', 3_000)
    await get(`${proxy.url}/late`)
    await get(`${proxy.url}/late`)
    const known = await settled(total(learned) + 2)
    expect(known.results.match - learned.results.match).toBe(2)
    expect(known.results.mismatch).toBe(learned.results.mismatch)
  })

  it('a noise sample the live color failed (500) teaches nothing: the status is never learned as noise', async () => {
    blue.failMirrored.add('/flaky')
    const before = await status()
    await get(`${proxy.url}/flaky`)
    const first = await settled(total(before) + 1)
    // The route's only sample failed: the copy could not be judged.
    expect(first.dropped.noiseUnknown! - before.dropped.noiseUnknown!).toBe(1)
    expect(first.noise.noisy.find((route) => route.route === 'GET /flaky')).toBeUndefined()
    blue.failMirrored.delete('/flaky')
    await get(`${proxy.url}/flaky`)
    const learned = await settled(total(first) + 1)
    expect(learned.results.match - first.results.match).toBe(1)
    // Green now fails the copies: a difference in status, counted, because the status was not learned as noise.
    green.failMirrored.add('/flaky')
    await get(`${proxy.url}/flaky`)
    const after = await settled(total(learned) + 1)
    expect(after.results.mismatch - learned.results.mismatch).toBe(1)
    expect(after.noise.noisy.find((route) => route.route === 'GET /flaky')?.fields.sort()).toEqual([
      '$.at',
      '$.id',
    ])
  })
})
