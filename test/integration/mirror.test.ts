import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type AdminReply, adminGet, adminPost, errorCode } from '../helpers/admin.ts'
import { runCli } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import { scrapeMetrics } from '../helpers/metrics.ts'
import { startProxy, startServer, type TestProxy, type TestServer } from '../helpers/servers.ts'

// Mirroring: a share of live requests copied to the idle color, its answers compared with the live ones (noise
// learned by asking the live color twice), and the figures gating a switch. Real upstreams, the proxy in-process.

interface Seen {
  method: string
  url: string
  mirror: boolean
  bodyLength: number
}

/** How an upstream misbehaves; each test sets what it needs and puts it back. */
interface Behaviour {
  /** Paths on which this upstream names another user. */
  differOn: Set<string>
  /** /slow waits this long. */
  slowMs: number
  /** /dead drops the connection. */
  dead: boolean
  /** Whether /hold answers only once released. */
  hold: boolean
  held: (() => void)[]
}

function releaseAll(behaviour: Behaviour): void {
  for (const release of behaviour.held.splice(0)) release()
}

interface MirrorUpstream {
  server: TestServer
  seen: Seen[]
  behaviour: Behaviour
}

/** A real upstream whose every JSON answer carries `served`, a counter: a field that differs on every answer. */
async function mirrorUpstream(name: string): Promise<MirrorUpstream> {
  const seen: Seen[] = []
  const behaviour: Behaviour = { differOn: new Set(), slowMs: 0, dead: false, hold: false, held: [] }
  let served = 0
  const server = await startServer(async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const path = (req.url ?? '/').split('?')[0]!
    const bodyLength = Buffer.concat(chunks).length
    if (path !== '/')
      seen.push({
        method: req.method!,
        url: req.url!,
        mirror: req.headers['x-bluegreen-mirror'] === '1',
        bodyLength,
      })
    if (path === '/slow') await sleep(behaviour.slowMs)
    if (path === '/dead' && behaviour.dead) {
      req.socket.destroy()
      return
    }
    if (path === '/hold' && behaviour.hold) await new Promise<void>((resolve) => behaviour.held.push(resolve))
    const user = behaviour.differOn.has(path) ? 'bob' : 'ann'
    res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': `session=${name}-secret` })
    res.end(
      JSON.stringify({ path, user, served: ++served, bodyLength, from: path === '/who' ? name : 'app' }),
    )
  })
  return { server, seen, behaviour }
}

interface Answer {
  status: number
  color: string | undefined
  body: string
  ms: number
}

function send(
  url: string,
  path: string,
  options: { method?: string; body?: Buffer; chunked?: boolean; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...options.headers }
    if (options.body && !options.chunked) headers['content-length'] = options.body.length
    const req = request(
      `${url}${path}`,
      { method: options.method ?? 'GET', headers, agent: false },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            color: res.headers['x-bluegreen-color'] as string | undefined,
            body: Buffer.concat(chunks).toString(),
            ms: performance.now() - started,
          }),
        )
      },
    )
    req.on('error', reject)
    if (options.body && options.chunked) {
      // Two writes without a content-length: sent chunked, its size unknown until the end.
      req.write(options.body.subarray(0, 10))
      req.end(options.body.subarray(10))
    } else req.end(options.body)
  })
}

interface MirrorStatus {
  enabled: boolean
  percent: number | null
  inFlight: number
  results: Record<'match' | 'mismatch' | 'error' | 'dropped', number>
  dropped: Record<'inFlight' | 'bodyTooLarge' | 'liveFailed' | 'noiseUnknown', number>
  window: Record<'blue' | 'green', { compared: number; mismatched: number; ratio: number }>
  mismatchedRoutes: { route: string; compared: number; mismatched: number }[]
  noise: { routes: number; noisy: { route: string; samples: number; fields: string[] }[] }
  lastError: { message: string } | null
}

interface Diff {
  method: string
  path: string
  status: { live: number; mirror: number }
  colors: { live: string; mirror: string }
  fields: string[]
  requestHeaders: Record<string, string>
  headers: { live: Record<string, string>; mirror: Record<string, string> }
  bodies: { live: string; mirror: string }
}

async function mirrorStatus(proxy: TestProxy): Promise<MirrorStatus> {
  return (await adminGet<MirrorStatus>(proxy.admin, '/mirror')).body
}

async function diffsOf(proxy: TestProxy): Promise<Diff[]> {
  return (await adminGet<{ diffs: Diff[] }>(proxy.admin, '/mirror/diffs')).body.diffs
}

/** Every copy is settled: none in flight, and `count` of them counted in all. */
async function settled(proxy: TestProxy, count: number): Promise<MirrorStatus> {
  return eventually(
    async () => {
      const status = await mirrorStatus(proxy)
      const total = Object.values(status.results).reduce((sum, value) => sum + value, 0)
      return status.inFlight === 0 && total >= count ? status : undefined
    },
    { timeout: 10_000, message: `${count} mirrored requests settled` },
  )
}

const total = (status: MirrorStatus) => Object.values(status.results).reduce((sum, value) => sum + value, 0)

/** Blue and green mirror upstreams behind an in-process proxy with these `mirror` settings, mirroring 100%. */
interface MirrorRig {
  blue: MirrorUpstream
  green: MirrorUpstream
  proxy: TestProxy
  /** POST /mirror's answer. */
  on: AdminReply
  close(): Promise<void>
}

async function startMirrorRig(mirror: Record<string, unknown>, reason?: string): Promise<MirrorRig> {
  const blue = await mirrorUpstream('blue')
  const green = await mirrorUpstream('green')
  const proxy = await startProxy({ blue: [blue.server.url], green: [green.server.url] }, { mirror })
  const on = await adminPost(proxy.admin, '/mirror', { percent: 100, ...(reason ? { reason } : {}) })
  return {
    blue,
    green,
    proxy,
    on,
    close: async () => {
      releaseAll(green.behaviour)
      await proxy.close()
      await blue.server.close()
      await green.server.close()
    },
  }
}

describe('mirroring to the idle color', () => {
  let rig: MirrorRig | undefined
  let blue: MirrorUpstream
  let green: MirrorUpstream
  let proxy: TestProxy

  beforeAll(async () => {
    rig = await startMirrorRig(
      {
        methods: ['GET', 'HEAD', 'PUT'],
        maxBodyBytes: 1000,
        timeout: '400ms',
        compare: { noiseSampleRate: 0 },
        gate: { minCompared: 5, maxMismatchRatio: 0.2, on: { switch: true, weights: true, rollout: true } },
      },
      'test green',
    )
    ;({ blue, green, proxy } = rig)
    expect(rig.on.status).toBe(200)
    expect(rig.on.body).toMatchObject({ mirror: { enabled: true, percent: 100 }, changed: true })
  })

  afterAll(() => rig?.close())

  it('counts mismatches for the one path green answers differently, and the diff names the field', async () => {
    green.behaviour.differOn.add('/users')
    const before = await mirrorStatus(proxy)
    for (let i = 0; i < 4; i++) {
      const users = await send(proxy.url, `/users?page=${i}`)
      const items = await send(proxy.url, '/items/1')
      // The client always gets blue's answer.
      expect([users.color, items.color, JSON.parse(users.body).user]).toEqual(['blue', 'blue', 'ann'])
    }
    const after = await settled(proxy, total(before) + 8)
    expect(after.results.mismatch - before.results.mismatch).toBe(4)
    expect(after.mismatchedRoutes).toEqual([{ route: 'GET /users', compared: 4, mismatched: 4 }])
    const diffs = (await diffsOf(proxy)).filter((diff) => diff.path.startsWith('/users'))
    expect(diffs).toHaveLength(4)
    expect(diffs[0]).toMatchObject({
      method: 'GET',
      path: '/users?page=3',
      status: { live: 200, mirror: 200 },
      colors: { live: 'blue', mirror: 'green' },
      fields: ['$.user'],
    })
    expect(diffs[0]!.bodies.mirror).toContain('"user":"bob"')
    expect((await diffsOf(proxy)).every((diff) => diff.path.startsWith('/users'))).toBe(true)
    // The copies carried the header that lets an application skip side effects.
    expect(green.seen.filter((seen) => seen.url.startsWith('/users')).every((seen) => seen.mirror)).toBe(true)
    const metrics = await scrapeMetrics(proxy.admin)
    expect(metrics.get('bluegreen_mirror_requests_total{result="mismatch"}')).toBe(after.results.mismatch)
    expect(metrics.get('bluegreen_mirror_requests_total{result="match"}')).toBe(after.results.match)
  })

  it('learns a field that differs between two live answers (a counter, a timestamp) as noise, and does not count it', async () => {
    const before = await mirrorStatus(proxy)
    const blueCopies = blue.seen.filter((seen) => seen.mirror).length
    for (let i = 0; i < 6; i++) await send(proxy.url, '/items/2')
    const after = await settled(proxy, total(before) + 6)
    expect(after.results.match - before.results.match).toBe(6)
    expect(after.results.mismatch).toBe(before.results.mismatch)
    const noisy = after.noise.noisy.find((route) => route.route === 'GET /items/2')
    expect(noisy).toMatchObject({ samples: 2, fields: ['$.served'] })
    // The live color was asked twice only for the route's first samples (noiseSampleRate 0 after that).
    expect(blue.seen.filter((seen) => seen.mirror).length - blueCopies).toBe(2)
  })

  it('a slow or dead green changes neither the client answer nor its wait; the copy counts as an error', async () => {
    green.behaviour.slowMs = 5_000
    green.behaviour.dead = true
    const before = await mirrorStatus(proxy)
    const slow = await send(proxy.url, '/slow')
    const dead = await send(proxy.url, '/dead')
    expect([slow.status, slow.color, JSON.parse(slow.body).path]).toEqual([200, 'blue', '/slow'])
    expect([dead.status, dead.color, JSON.parse(dead.body).path]).toEqual([200, 'blue', '/dead'])
    // Not a latency figure (bench/mirror.ts measures those): the client's answer did not wait for green's 5 s.
    expect(slow.ms).toBeLessThan(green.behaviour.slowMs)
    const after = await settled(proxy, total(before) + 2)
    expect(after.results.error - before.results.error).toBe(2)
    expect(after.lastError?.message).toMatch(/\/slow|\/dead/)
    green.behaviour.slowMs = 0
    green.behaviour.dead = false
  })

  it('copies a PUT body under the limit whole; a POST, or a body over the limit, is not copied', async () => {
    const before = await mirrorStatus(proxy)
    const greenPuts = () => green.seen.filter((seen) => seen.url === '/orders')
    const post = await send(proxy.url, '/orders', { method: 'POST', body: Buffer.alloc(100, 'p') })
    expect(JSON.parse(post.body)).toMatchObject({ bodyLength: 100 })
    const put = await send(proxy.url, '/orders', { method: 'PUT', body: Buffer.alloc(600, 'q') })
    expect(JSON.parse(put.body)).toMatchObject({ bodyLength: 600 })
    await eventually(() => greenPuts().length === 1)
    expect(greenPuts()).toEqual([{ method: 'PUT', url: '/orders', mirror: true, bodyLength: 600 }])
    // A chunked body under the limit is copied whole too, with the length it turned out to have.
    await send(proxy.url, '/orders', { method: 'PUT', body: Buffer.alloc(300, 'c'), chunked: true })
    await eventually(() => greenPuts().length === 2)
    expect(greenPuts()[1]).toEqual({ method: 'PUT', url: '/orders', mirror: true, bodyLength: 300 })
    // Over the limit, declared up front or found out while streaming: the live color gets it all, no copy is sent.
    const declared = await send(proxy.url, '/orders', { method: 'PUT', body: Buffer.alloc(5000, 'r') })
    const chunked = await send(proxy.url, '/orders', {
      method: 'PUT',
      body: Buffer.alloc(5000, 's'),
      chunked: true,
    })
    expect([JSON.parse(declared.body).bodyLength, JSON.parse(chunked.body).bodyLength]).toEqual([5000, 5000])
    const after = await settled(proxy, total(before) + 4)
    expect(after.dropped.bodyTooLarge - before.dropped.bodyTooLarge).toBe(2)
    expect(greenPuts()).toHaveLength(2)
    expect(green.seen.some((seen) => seen.method === 'POST')).toBe(false)
  })

  it('redacts secrets in the headers a diff shows', async () => {
    await send(proxy.url, '/users?secret', {
      headers: {
        authorization: 'Bearer hunter2',
        cookie: 'sid=hunter2',
        'x-api-key': 'hunter2',
        'x-trace': 'visible',
      },
    })
    const diff = await eventually(async () =>
      (await diffsOf(proxy)).find((each) => each.path === '/users?secret'),
    )
    expect(diff.requestHeaders).toMatchObject({
      authorization: '[redacted]',
      cookie: '[redacted]',
      'x-api-key': '[redacted]',
      'x-trace': 'visible',
    })
    expect(diff.headers.live['set-cookie']).toBe('[redacted]')
    expect(diff.headers.mirror['set-cookie']).toBe('[redacted]')
    expect(JSON.stringify(diff)).not.toMatch(/hunter2|-secret/)
  })

  it('a client cannot send x-bluegreen-mirror: the live color never sees it, and a copy carries it once', async () => {
    // An application skips side effects on a request that says it is a copy: a client saying so on a live
    // request would get the answer without the side effects (an order without its payment).
    const liveBefore = blue.seen.length
    const post = await send(proxy.url, '/orders', {
      method: 'POST',
      body: Buffer.from('{}'),
      headers: { 'x-bluegreen-mirror': '1' },
    })
    expect(post.color).toBe('blue')
    await send(proxy.url, '/items/3', { headers: { 'x-bluegreen-mirror': '0' } })
    const copy = await eventually(() => green.seen.find((seen) => seen.url === '/items/3'))
    expect(copy.mirror).toBe(true)
    // Blue's own answers (a noise sample to blue is a copy, and says so).
    const live = blue.seen
      .slice(liveBefore)
      .filter((seen) => seen.method === 'POST' || seen.url === '/items/3')
    expect(live.find((seen) => seen.method === 'POST')).toMatchObject({ url: '/orders', mirror: false })
    expect(live.filter((seen) => seen.url === '/items/3' && !seen.mirror)).toHaveLength(1)
  })

  it('redacts secrets in the query string a diff (and the last error) shows', async () => {
    green.behaviour.differOn.add('/users')
    await send(proxy.url, '/users?access_token=hunter3&page=2&API_KEY=hunter3&sig=hunter3')
    const diff = await eventually(async () =>
      (await diffsOf(proxy)).find((each) => each.path.startsWith('/users?access_token')),
    )
    expect(diff.path).toBe('/users?access_token=[redacted]&page=2&API_KEY=[redacted]&sig=[redacted]')
    green.behaviour.dead = true
    await send(proxy.url, '/dead?token=hunter3')
    const status = await eventually(async () => {
      const now = await mirrorStatus(proxy)
      return now.lastError?.message.includes('/dead?token') ? now : undefined
    })
    green.behaviour.dead = false
    expect(status.lastError?.message).toContain('/dead?token=[redacted]')
    expect(JSON.stringify(await diffsOf(proxy))).not.toContain('hunter3')
    expect(JSON.stringify(status)).not.toContain('hunter3')
  })

  it('copies a GET or HEAD with a body as the live color got it, compared, not counted as an error', async () => {
    const before = await mirrorStatus(proxy)
    const answer = await send(proxy.url, '/search', { method: 'GET', body: Buffer.from('{"q":"shoes"}') })
    expect(JSON.parse(answer.body)).toMatchObject({ bodyLength: 13 })
    expect(
      (await send(proxy.url, '/search', { method: 'HEAD', body: Buffer.from('{"q":"hats"}') })).status,
    ).toBe(200)
    const after = await settled(proxy, total(before) + 2)
    expect(after.results.error).toBe(before.results.error)
    expect(green.seen.filter((seen) => seen.url === '/search')).toEqual([
      { method: 'GET', url: '/search', mirror: true, bodyLength: 13 },
      { method: 'HEAD', url: '/search', mirror: true, bodyLength: 12 },
    ])
  })

  it('gates a switch on the mismatch ratio: refused, forced (audited), then allowed once green answers alike', async () => {
    green.behaviour.differOn.add('/users')
    for (let i = 0; i < 6; i++) await send(proxy.url, '/users')
    await settled(proxy, 0)
    const refused = await adminPost<{ error: { message: string; details: Record<string, unknown> } }>(
      proxy.admin,
      '/switch',
      { to: 'green' },
    )
    expect(refused.status).toBe(412)
    expect(errorCode(refused)).toBe('BG_MIRROR_MISMATCH')
    const details = refused.body.error.details as {
      color: string
      compared: number
      mismatched: number
      top: { path: string; field: string }[]
    }
    expect(details.color).toBe('green')
    expect(details.mismatched).toBeGreaterThan(0)
    expect(details.top[0]).toMatchObject({ path: '/users', field: '$.user' })
    expect(refused.body.error.message).toMatch(/answered differently/)
    // A weight change toward green and a rollout's first step are gated alike; one away from green is not.
    expect(errorCode(await adminPost(proxy.admin, '/weights', { blue: 90, green: 10 }))).toBe(
      'BG_MIRROR_MISMATCH',
    )
    const rollout = { to: 'green', steps: [10, 100], stepSeconds: 60 }
    expect(errorCode(await adminPost(proxy.admin, '/rollout', rollout))).toBe('BG_MIRROR_MISMATCH')

    const forced = await adminPost(proxy.admin, '/switch', { to: 'green', force: true })
    expect(forced.status).toBe(200)
    const events = (
      await adminGet<{ events: { action: string; forcedPast?: string[] }[] }>(proxy.admin, '/events')
    ).body.events
    expect(events[0]).toMatchObject({ action: 'switch', forcedPast: ['mirror'] })
    expect((await adminPost(proxy.admin, '/rollback', {})).status).toBe(200)

    // Green fixed; the figures count from when mirroring was turned on again.
    green.behaviour.differOn.clear()
    expect((await adminPost(proxy.admin, '/mirror', { enabled: false })).body).toMatchObject({
      mirror: { enabled: false, percent: 100 },
    })
    const tooFew = await adminPost<{ error: { message: string } }>(proxy.admin, '/switch', { to: 'green' })
    expect(errorCode(tooFew)).toBe('BG_MIRROR_MISMATCH')
    expect(tooFew.body.error.message).toMatch(/only 0 mirrored request/)
    expect((await adminPost(proxy.admin, '/mirror', { enabled: true })).body).toMatchObject({
      mirror: { enabled: true, percent: 100 },
    })
    const before = await mirrorStatus(proxy)
    for (let i = 0; i < 6; i++) await send(proxy.url, '/users')
    await settled(proxy, total(before) + 6)
    const allowed = await adminPost(proxy.admin, '/switch', { to: 'green' })
    expect(allowed.status).toBe(200)
    expect(allowed.body).toMatchObject({ active: 'green', mirror: { enabled: true, percent: 100 } })
    // Now blue is idle: the copies go to it.
    expect((await send(proxy.url, '/who')).color).toBe('green')
    await eventually(() => blue.seen.some((seen) => seen.url === '/who' && seen.mirror))
    // A mirror change moves no traffic: no switch is counted, and the watch of the switch goes on.
    const switches = async () =>
      (await scrapeMetrics(proxy.admin)).get('bluegreen_switches_total{trigger="admin"}')
    const counted = await switches()
    const share = await adminPost<{ generation: number }>(proxy.admin, '/mirror', { percent: 50 })
    type Watching = { replica: { watching: { color: string; generation: number } | null } }
    const watching = (await adminGet<Watching>(proxy.admin, '/state')).body.replica.watching
    expect(watching).toMatchObject({ color: 'green', generation: share.body.generation })
    expect(await switches()).toBe(counted)
    await adminPost(proxy.admin, '/mirror', { percent: 100 })
    expect((await adminPost(proxy.admin, '/rollback', {})).status).toBe(200)
  })

  it('POST /mirror checks its body, is audited, and keeps the routing', async () => {
    const bad = await adminPost(proxy.admin, '/mirror', { percent: 0 })
    expect([bad.status, errorCode(bad)]).toEqual([400, 'BG_BAD_REQUEST'])
    expect(errorCode(await adminPost(proxy.admin, '/mirror', {}))).toBe('BG_BAD_REQUEST')
    expect(errorCode(await adminPost(proxy.admin, '/mirror', { percent: 10, expectedGeneration: 0 }))).toBe(
      'BG_GENERATION_CONFLICT',
    )
    const state = (await adminGet<{ generation: number; active: string }>(proxy.admin, '/state')).body
    const on = await adminPost(proxy.admin, '/mirror', { percent: 40, expectedGeneration: state.generation })
    expect(on.body).toMatchObject({
      active: state.active,
      generation: state.generation + 1,
      mirror: { enabled: true, percent: 40 },
    })
    const events = (await adminGet<{ events: { action: string; reason: string }[] }>(proxy.admin, '/events'))
      .body.events
    expect(events[0]).toMatchObject({ action: 'mirror', reason: 'mirror 40% of requests to the idle color' })
    await adminPost(proxy.admin, '/mirror', { percent: 100 })
  })

  it('bluegreen mirror on / off / status', async () => {
    const on = await runCli(['mirror', 'on', '25', '--admin', proxy.admin])
    expect([on.code, on.stdout]).toEqual([
      0,
      expect.stringMatching(/^mirroring 25% of requests to the idle color, generation \d+/),
    ])
    const status = await runCli(['mirror', 'status', '--admin', proxy.admin])
    expect(status.code).toBe(0)
    expect(status.stdout).toMatch(/mirroring\s+25% of requests/)
    expect(status.stdout).toMatch(/noise\s+GET \/items\/\d: \$\.served/)
    const json = await runCli(['mirror', 'status', '--json', '--admin', proxy.admin])
    expect(JSON.parse(json.stdout)).toMatchObject({ enabled: true, percent: 25 })
    const off = await runCli(['mirror', 'off', '--admin', proxy.admin])
    expect([off.code, off.stdout]).toEqual([0, expect.stringMatching(/^mirroring off, generation/)])
    expect((await mirrorStatus(proxy)).enabled).toBe(false)
    const usage = await runCli(['mirror', 'on', '200', '--admin', proxy.admin])
    expect(usage.code).toBe(2)
    await adminPost(proxy.admin, '/mirror', { percent: 100 })
  })
})

describe('mirroring, bounded in flight', () => {
  let rig: MirrorRig | undefined
  let green: MirrorUpstream
  let proxy: TestProxy

  beforeAll(async () => {
    rig = await startMirrorRig({ maxInFlight: 2, timeout: '20s' })
    ;({ green, proxy } = rig)
  })

  afterAll(() => rig?.close())

  it('drops and counts the copies beyond maxInFlight, and the clients never wait for them', async () => {
    green.behaviour.hold = true
    for (let i = 0; i < 2; i++) expect((await send(proxy.url, '/hold')).color).toBe('blue')
    await eventually(() => green.behaviour.held.length === 2)
    expect((await mirrorStatus(proxy)).inFlight).toBe(2)
    for (let i = 0; i < 5; i++) expect((await send(proxy.url, '/hold')).status).toBe(200)
    const status = await mirrorStatus(proxy)
    expect(status.dropped.inFlight).toBe(5)
    expect(status.results.dropped).toBe(5)
    expect((await scrapeMetrics(proxy.admin)).get('bluegreen_mirror_requests_total{result="dropped"}')).toBe(
      5,
    )
    expect(green.behaviour.held).toHaveLength(2)
    releaseAll(green.behaviour)
    const after = await settled(proxy, 7)
    expect(after.inFlight).toBe(0)
  })
})
