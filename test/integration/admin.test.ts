import { readFile } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type AdminReply, adminGet, adminPost, callAdmin, errorCode } from '../helpers/admin.ts'
import { echoUpstream, startProxy, type TestProxy, type TestServer, useColorRig } from '../helpers/servers.ts'

/**
 * Sends a body with chunked transfer encoding (no content-length), as a streaming client would, and resolves
 * once the answer is read and the upload has finished; a reset connection at any point is a failure.
 */
async function postChunked(admin: string, path: string, size: number) {
  // A keep-alive client: the server has no reason to close the connection after answering.
  const agent = new Agent({ keepAlive: true })
  try {
    return await sendChunked(agent, `${admin}${path}`, size)
  } finally {
    agent.destroy()
  }
}

function sendChunked(agent: Agent, url: string, size: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { 'content-type': 'application/json' }, agent })
    let answer: { status: number; body: string } | undefined
    let uploaded = false
    const settle = () => {
      if (answer && uploaded) resolve(answer)
    }
    req.on('response', (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () => {
        answer = { status: res.statusCode ?? 0, body }
        settle()
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.on('finish', () => {
      uploaded = true
      settle()
    })
    // Written all at once: Node's client stops relaying 'drain' once a response has arrived mid-upload.
    const chunk = Buffer.alloc(16 * 1024, 'a')
    for (let sent = 0; sent < size; sent += chunk.length) req.write(chunk)
    req.end()
  })
}

describe('admin API', () => {
  const rig = useColorRig()
  let stateFile: string
  beforeAll(() => {
    stateFile = join(rig.proxy.stateDir, 'state.json')
  })

  // The routing state itself: what this replica reports about itself (health checks, drains) moves on its own.
  const state = async () => {
    const { replica: _replica, ...routing } = (await adminGet(rig.proxy.admin, '/state')).body
    return routing
  }

  /** Runs a bad call and checks it answered `status` with `code` and that neither the state nor its file moved. */
  async function refused(make: () => Promise<AdminReply>, status: number, code: string) {
    const before = await state()
    const file = await readFile(stateFile, 'utf8')
    const reply = await make()
    expect(reply.status, JSON.stringify(reply.body)).toBe(status)
    expect(errorCode(reply)).toBe(code)
    expect(typeof (reply.body.error as { message: unknown }).message).toBe('string')
    expect(reply.headers.get('content-type')).toMatch(/^application\/json/)
    expect(await state()).toEqual(before)
    expect(await readFile(stateFile, 'utf8')).toBe(file)
    return reply
  }

  it('GET /state answers the contract state and what this replica applied', async () => {
    const reply = await adminGet(rig.proxy.admin, '/state?verbose=1')
    expect(reply.status).toBe(200)
    expect(reply.body).toMatchObject({
      active: 'blue',
      weights: { blue: 100, green: 0 },
      generation: 0,
      updatedBy: expect.any(String),
      reason: expect.any(String),
      replica: { id: rig.proxy.app.replicaId, appliedGeneration: 0 },
    })
    expect(Number.isNaN(Date.parse(reply.body.updatedAt as string))).toBe(false)
    expect(reply.headers.get('cache-control')).toBe('no-store')
  })

  it('/healthz and /readyz answer 200 while the active pool can serve', async () => {
    const health = await adminGet(rig.proxy.admin, '/healthz')
    expect(health.status).toBe(200)
    expect(health.body).toEqual({ status: 'ok' })
    const ready = await adminGet(rig.proxy.admin, '/readyz')
    expect(ready.status).toBe(200)
    expect(ready.body).toEqual({ ready: true, reasons: [] })
  })

  it('POST /switch flips all traffic, bumps the generation by one and records the reason', async () => {
    const before = await state()
    const reply = await adminPost(rig.proxy.admin, '/switch', { to: 'green', reason: 'release 42' })
    expect(reply.status).toBe(200)
    expect(reply.body).toMatchObject({
      active: 'green',
      weights: { blue: 0, green: 100 },
      generation: (before.generation as number) + 1,
      reason: 'release 42',
      updatedBy: expect.stringMatching(/^admin@/),
      replica: { appliedGeneration: (before.generation as number) + 1 },
    })
    expect((await fetch(rig.proxy.url)).headers.get('x-bluegreen-color')).toBe('green')
    expect(await state()).toMatchObject({ active: 'green', generation: (before.generation as number) + 1 })

    const back = await adminPost(rig.proxy.admin, '/switch', { to: 'blue', force: false, wait: true })
    expect(back.status).toBe(200)
    expect(back.body).toMatchObject({ active: 'blue', reason: 'switch to blue' })
  })

  it('POST /weights splits traffic; the active color follows the majority and a tie keeps it', async () => {
    let reply = await adminPost(rig.proxy.admin, '/weights', { blue: 90, green: 10 })
    expect(reply.status).toBe(200)
    expect(reply.body).toMatchObject({ active: 'blue', weights: { blue: 90, green: 10 } })
    reply = await adminPost(rig.proxy.admin, '/weights', { blue: 50, green: 50 })
    expect(reply.body).toMatchObject({ active: 'blue', weights: { blue: 50, green: 50 } })
    reply = await adminPost(rig.proxy.admin, '/weights', { blue: 30, green: 70, reason: 'canary' })
    expect(reply.body).toMatchObject({ active: 'green', weights: { blue: 30, green: 70 }, reason: 'canary' })
    reply = await adminPost(rig.proxy.admin, '/weights', { blue: 100, green: 0 })
    expect(reply.body).toMatchObject({ active: 'blue', weights: { blue: 100, green: 0 } })
  })

  it('expectedGeneration: the current one is accepted, a stale one is 409 BG_GENERATION_CONFLICT', async () => {
    const { generation } = (await state()) as { generation: number }
    await refused(
      () => adminPost(rig.proxy.admin, '/switch', { to: 'green', expectedGeneration: generation - 1 }),
      409,
      'BG_GENERATION_CONFLICT',
    )
    await refused(
      () =>
        adminPost(rig.proxy.admin, '/weights', { blue: 10, green: 90, expectedGeneration: generation + 5 }),
      409,
      'BG_GENERATION_CONFLICT',
    )
    // Not the state in force (all blue), which would be answered unchanged at the same generation.
    const accepted = await adminPost(rig.proxy.admin, '/weights', {
      blue: 60,
      green: 40,
      expectedGeneration: generation,
    })
    expect(accepted.status).toBe(200)
    expect(accepted.body.generation).toBe(generation + 1)
    // The same expectation again is now stale.
    await refused(
      () => adminPost(rig.proxy.admin, '/switch', { to: 'blue', expectedGeneration: generation }),
      409,
      'BG_GENERATION_CONFLICT',
    )
  })

  it('refuses every malformed /switch with 400 and its code, changing nothing', async () => {
    const cases: [unknown, string][] = [
      ['not json', 'BG_BAD_REQUEST'],
      ['{"to": "green"', 'BG_BAD_REQUEST'],
      ['[]', 'BG_BAD_REQUEST'],
      ['"green"', 'BG_BAD_REQUEST'],
      ['null', 'BG_BAD_REQUEST'],
      [{}, 'BG_UNKNOWN_COLOR'],
      [{ to: 'purple' }, 'BG_UNKNOWN_COLOR'],
      [{ to: 'GREEN' }, 'BG_UNKNOWN_COLOR'],
      [{ to: 1 }, 'BG_UNKNOWN_COLOR'],
      [{ to: 'green', expectedGeneration: '3' }, 'BG_BAD_REQUEST'],
      [{ to: 'green', expectedGeneration: -1 }, 'BG_BAD_REQUEST'],
      [{ to: 'green', expectedGeneration: 1.5 }, 'BG_BAD_REQUEST'],
      [{ to: 'green', force: 'yes' }, 'BG_BAD_REQUEST'],
      [{ to: 'green', wait: 1 }, 'BG_BAD_REQUEST'],
      [{ to: 'green', reason: 42 }, 'BG_BAD_REQUEST'],
      [{ to: 'green', reason: 'x'.repeat(501) }, 'BG_BAD_REQUEST'],
      [{ to: 'green', expectedGeneraton: 3 }, 'BG_BAD_REQUEST'],
      [{ to: 'green', weights: { blue: 0, green: 100 } }, 'BG_BAD_REQUEST'],
    ]
    for (const [body, code] of cases)
      await refused(() => adminPost(rig.proxy.admin, '/switch', body), 400, code)
  })

  it('refuses every malformed /weights with 400 and its code, changing nothing', async () => {
    const cases: [unknown, string][] = [
      ['{', 'BG_BAD_REQUEST'],
      [{}, 'BG_INVALID_WEIGHTS'],
      [{ blue: 90 }, 'BG_INVALID_WEIGHTS'],
      [{ blue: 90, green: 20 }, 'BG_INVALID_WEIGHTS'],
      [{ blue: 50, green: 49 }, 'BG_INVALID_WEIGHTS'],
      [{ blue: '90', green: '10' }, 'BG_INVALID_WEIGHTS'],
      [{ blue: 90.5, green: 9.5 }, 'BG_INVALID_WEIGHTS'],
      [{ blue: 110, green: -10 }, 'BG_INVALID_WEIGHTS'],
      [{ blue: null, green: 100 }, 'BG_INVALID_WEIGHTS'],
      [{ blue: 90, green: 10, red: 0 }, 'BG_BAD_REQUEST'],
      [{ blue: 90, green: 10, expectedGeneration: 'latest' }, 'BG_BAD_REQUEST'],
      [{ blue: 90, green: 10, force: 1 }, 'BG_BAD_REQUEST'],
      [{ blue: 90, green: 10, reason: ['a'] }, 'BG_BAD_REQUEST'],
    ]
    for (const [body, code] of cases)
      await refused(() => adminPost(rig.proxy.admin, '/weights', body), 400, code)
  })

  it('refuses a body over 64 KiB with 413, declared or streamed, changing nothing', async () => {
    const large = JSON.stringify({ to: 'green', reason: 'x'.repeat(70 * 1024) })
    await refused(() => adminPost(rig.proxy.admin, '/switch', large), 413, 'BG_BODY_TOO_LARGE')
    const before = await state()
    // Far more than socket buffers hold: cutting the request off here would reset the connection before the
    // client could read the answer.
    const streamed = await postChunked(rig.proxy.admin, '/switch', 8 * 1024 * 1024)
    expect(streamed.status).toBe(413)
    expect(JSON.parse(streamed.body).error.code).toBe('BG_BODY_TOO_LARGE')
    expect(await state()).toEqual(before)
  })

  it('answers 405 with Allow for a wrong method and 404 for an unknown path', async () => {
    for (const [method, path, allow] of [
      ['GET', '/switch', 'POST'],
      ['PUT', '/weights', 'POST'],
      ['POST', '/state', 'GET'],
      ['DELETE', '/state', 'GET'],
      ['POST', '/healthz', 'GET'],
      ['POST', '/readyz', 'GET'],
    ] as const) {
      const reply = await refused(
        () => callAdmin(rig.proxy.admin, path, { method }),
        405,
        'BG_METHOD_NOT_ALLOWED',
      )
      expect(reply.headers.get('allow')).toBe(allow)
    }
    // The console is at / (GET only); nothing else of it is an endpoint but its hashed files.
    const consolePost = await refused(
      () => callAdmin(rig.proxy.admin, '/', { method: 'POST' }),
      405,
      'BG_METHOD_NOT_ALLOWED',
    )
    expect(consolePost.headers.get('allow')).toBe('GET')
    for (const path of ['/index.html', '/console/console.js', '/switch/green', '/State', '/metricz']) {
      await refused(() => adminGet(rig.proxy.admin, path), 404, 'BG_NOT_FOUND')
      await refused(() => adminPost(rig.proxy.admin, path, { to: 'green' }), 404, 'BG_NOT_FOUND')
    }
  })
})

describe('admin API with a token', () => {
  const rig = useColorRig({ admin: { listen: '127.0.0.1:0', token: 'secret' } })

  it('refuses mutating calls without the right bearer token with 401, changing nothing', async () => {
    const wrong = [
      undefined,
      'secret',
      'Bearer',
      'Bearer ',
      'Bearersecret',
      'Bearer wrong',
      'Bearer secret2',
      'Bearer secret extra',
      'Basic secret',
    ]
    // Each attempt from its own address: five failures from one address are throttled (tested below).
    let client = 0
    for (const token of wrong) {
      for (const [path, body] of [
        ['/switch', { to: 'green' }],
        ['/weights', { blue: 50, green: 50 }],
      ] as const) {
        const reply = await callAdmin(rig.proxy.admin, path, {
          body,
          authorization: token,
          from: `127.0.1.${++client}`,
        })
        expect(reply.status, `${path} with ${token}`).toBe(401)
        expect(errorCode(reply)).toBe('BG_UNAUTHORIZED')
      }
    }
    // Authentication comes before reading the body: a bad body without a token is still a 401.
    expect(
      (await callAdmin(rig.proxy.admin, '/switch', { body: 'not json', from: '127.0.1.200' })).status,
    ).toBe(401)
    const current = await adminGet(rig.proxy.admin, '/state')
    expect(current.body).toMatchObject({ active: 'blue', generation: 0 })
  })

  it('accepts the right token and keeps GETs open', async () => {
    const reply = await callAdmin(rig.proxy.admin, '/switch', {
      body: { to: 'green' },
      authorization: 'Bearer secret',
    })
    expect(reply.status).toBe(200)
    expect(reply.body).toMatchObject({ active: 'green', generation: 1 })
    // The auth scheme is case-insensitive (RFC 9110 11.1).
    for (const token of ['bearer secret', 'BEARER  secret']) {
      expect(
        (await callAdmin(rig.proxy.admin, '/switch', { body: { to: 'green' }, authorization: token })).status,
        token,
      ).toBe(200)
    }
    const weights = await callAdmin(rig.proxy.admin, '/weights', {
      body: { blue: 50, green: 50 },
      authorization: 'Bearer secret',
    })
    expect(weights.status).toBe(200)
    for (const path of ['/state', '/healthz', '/readyz']) {
      expect((await adminGet(rig.proxy.admin, path)).status, path).toBe(200)
    }
  })

  it('slows down repeated failures from one address with 429 and Retry-After, and only that address', async () => {
    const from = '127.0.2.1'
    for (let i = 0; i < 5; i++) {
      expect(
        (
          await callAdmin(rig.proxy.admin, '/switch', {
            body: { to: 'green' },
            authorization: 'Bearer wrong',
            from,
          })
        ).status,
      ).toBe(401)
    }
    // Blocked now, even with the right token: the block says nothing about whether a guess was right.
    const blocked = await callAdmin(rig.proxy.admin, '/switch', {
      body: { to: 'green' },
      authorization: 'Bearer secret',
      from,
    })
    expect(blocked.status).toBe(429)
    expect(errorCode(blocked)).toBe('BG_TOO_MANY_ATTEMPTS')
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    const other = await callAdmin(rig.proxy.admin, '/weights', {
      body: { blue: 100, green: 0 },
      authorization: 'Bearer secret',
      from: '127.0.2.2',
    })
    expect(other.status).toBe(200)
  })
})

describe('admin API with an empty pool', () => {
  let blue: TestServer
  let proxy: TestProxy

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    proxy = await startProxy({ blue: [blue.url], green: [] })
  })
  afterAll(async () => {
    await proxy?.close()
    await blue?.close()
  })

  it('refuses with 412 BG_TARGET_UNHEALTHY to send traffic to it, unless forced', async () => {
    for (const [path, body] of [
      ['/switch', { to: 'green' }],
      ['/switch', { to: 'green', force: false }],
      ['/weights', { blue: 99, green: 1 }],
      ['/weights', { blue: 0, green: 100 }],
    ] as const) {
      const reply = await adminPost(proxy.admin, path, body)
      expect(reply.status, JSON.stringify(body)).toBe(412)
      expect(errorCode(reply)).toBe('BG_TARGET_UNHEALTHY')
    }
    expect((await adminGet(proxy.admin, '/state')).body).toMatchObject({ active: 'blue', generation: 0 })
    expect((await fetch(proxy.url)).headers.get('x-bluegreen-color')).toBe('blue')
    // Weights that leave the empty pool at 0 are fine.
    expect((await adminPost(proxy.admin, '/weights', { blue: 100, green: 0 })).status).toBe(200)

    const forced = await adminPost(proxy.admin, '/switch', { to: 'green', force: true, reason: 'drill' })
    expect(forced.status).toBe(200)
    expect(forced.body).toMatchObject({ active: 'green', weights: { blue: 0, green: 100 } })
    // The proxy then says honestly that nothing can serve, and readiness fails.
    const response = await fetch(proxy.url)
    expect(response.status).toBe(503)
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('BG_NO_HEALTHY_UPSTREAM')
    const ready = await adminGet(proxy.admin, '/readyz')
    expect(ready.status).toBe(503)
    expect(ready.body.ready).toBe(false)
    expect((ready.body.reasons as string[]).join()).toMatch(/green/)
    // Switching back to a pool that can serve needs no force.
    expect((await adminPost(proxy.admin, '/switch', { to: 'blue' })).status).toBe(200)
    expect((await adminGet(proxy.admin, '/readyz')).status).toBe(200)
  })
})
