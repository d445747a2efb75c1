import { readdir, readFile } from 'node:fs/promises'
import { type IncomingHttpHeaders, request } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from '../helpers/cli.ts'
import { parseRawResponse, rawRequest } from '../helpers/raw.ts'
import {
  echoUpstream,
  spawnProxy,
  startProxy,
  type TestProxy,
  type TestServer,
  tempDir,
  useColorRig,
  writeConfig,
} from '../helpers/servers.ts'

// The admin API can move all traffic. These tests attack it the way a stray request, a browser page or a log
// reader would: through the public port, with a foreign Host or Origin, with wrong tokens, and by reading logs.

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  text: string
  /** The parsed JSON body ({} when there is none). */
  body: Record<string, unknown>
}

/** One request with node:http, which sends the path and the Host header exactly as given (fetch normalizes both). */
function send(
  base: string,
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: unknown } = {},
): Promise<Reply> {
  const payload =
    options.body === undefined
      ? undefined
      : typeof options.body === 'string'
        ? options.body
        : JSON.stringify(options.body)
  const { hostname, port } = new URL(base)
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: hostname,
        port,
        path,
        method: options.method ?? (payload === undefined ? 'GET' : 'POST'),
        agent: false,
        headers: {
          ...(payload === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
          ...options.headers,
        },
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          text += chunk
        })
        res.on('end', () => {
          let body: Record<string, unknown> = {}
          try {
            body = text ? (JSON.parse(text) as Record<string, unknown>) : {}
          } catch {}
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body })
        })
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(payload)
  })
}

const codeOf = (reply: Reply) => (reply.body.error as { code?: string } | undefined)?.code

/** The routing state, without the replica's self-report (health checks and drains move on their own). */
async function stateOf(proxy: TestProxy) {
  const reply = await send(proxy.admin, '/state')
  expect(reply.status).toBe(200)
  const { replica: _replica, ...routing } = reply.body as Record<string, unknown>
  return routing as { active: string; generation: number; updatedBy: string }
}

async function eventsOf(admin: string, headers: Record<string, string> = {}) {
  const reply = await send(admin, '/events?limit=100', { headers })
  expect(reply.status, reply.text).toBe(200)
  return reply.body.events as { actor: string; result: string; code?: string; action: string }[]
}

describe('admin paths on the public listener', () => {
  const rig = useColorRig()

  it('reach the upstream as ordinary requests however the path is encoded, and change nothing', async () => {
    const adminHost = new URL(rig.proxy.admin).host
    const paths = [
      '/switch',
      '/%73witch',
      '/%73%77%69%74%63%68',
      '//switch',
      '///switch',
      '/./switch',
      '/a/../switch',
      '/%2e%2e/switch',
      '/%2e/switch',
      '/switch/',
      '/SWITCH',
      '/switch?to=green',
      '/weights',
      '/rollback',
      '/state',
      '/metrics',
      '/events',
      '/replicas',
      '/readyz',
      '/healthz',
    ]
    const body = { to: 'green', blue: 0, green: 100, force: true }
    for (const path of paths) {
      for (const variant of [
        { method: 'POST', body },
        { method: 'GET' },
        // Naming the admin listener in Host changes nothing either: the public listener has one job.
        { method: 'POST', body, headers: { host: adminHost } },
      ]) {
        const what = `${variant.method} ${path} ${JSON.stringify(variant.headers ?? {})}`
        const reply = await send(rig.proxy.url, path, variant)
        expect(reply.status, what).toBe(200)
        expect(reply.headers['x-upstream'], what).toBe('blue')
        expect(reply.headers['x-bluegreen-color'], what).toBe('blue')
        // The upstream saw the request as sent: not rewritten, not answered by the admin API.
        expect(reply.body, what).toMatchObject({ name: 'blue', method: variant.method, url: path })
      }
    }
    expect(await stateOf(rig.proxy)).toMatchObject({ active: 'blue', generation: 0 })
    expect(await eventsOf(rig.proxy.admin)).toEqual([])
  })

  it('forwards an absolute-form target naming the admin listener to the upstream, never to the admin API', async () => {
    const adminHost = new URL(rig.proxy.admin).host
    const payload = JSON.stringify({ to: 'green', force: true })
    for (const target of [`http://${adminHost}/switch`, `http://${adminHost}//switch`]) {
      const raw = await rawRequest(
        rig.proxy.url,
        `POST ${target} HTTP/1.1\r\nHost: ${adminHost}\r\ncontent-type: application/json\r\n` +
          `content-length: ${payload.length}\r\nconnection: close\r\n\r\n${payload}`,
      )
      const reply = parseRawResponse(raw)
      expect(reply.status, raw).toBe(200)
      // The body is chunked; the echo's JSON is its one chunk.
      const echoed = JSON.parse(reply.body.slice(reply.body.indexOf('{'), reply.body.lastIndexOf('}') + 1))
      expect(echoed).toMatchObject({ name: 'blue', method: 'POST', url: target })
    }
    expect(await stateOf(rig.proxy)).toMatchObject({ active: 'blue', generation: 0 })
  })
})

describe('admin Host and Origin checks', () => {
  let blue: TestServer
  let green: TestServer
  let loopback: TestProxy
  let named: TestProxy

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    green = await echoUpstream('green')
    loopback = await startProxy({ blue: [blue.url], green: [green.url] })
    named = await startProxy(
      { blue: [blue.url], green: [green.url] },
      {
        admin: {
          listen: '127.0.0.1:0',
          allowedHosts: ['bluegreen-admin.internal'],
          allowedOrigins: ['https://ops.example'],
        },
      },
    )
  })
  afterAll(async () => {
    await loopback?.close()
    await named?.close()
    await blue?.close()
    await green?.close()
  })

  it('refuses a foreign Host with 403 BG_FORBIDDEN on every endpoint but the probes and metrics (DNS rebinding), changing nothing', async () => {
    const port = new URL(loopback.admin).port
    for (const host of ['evil.example', `evil.example:${port}`, `127.0.0.1.evil.example:${port}`]) {
      for (const path of ['/state', '/events', '/replicas', '/nowhere']) {
        const reply = await send(loopback.admin, path, { headers: { host } })
        expect(reply.status, `${host} ${path}`).toBe(403)
        expect(codeOf(reply)).toBe('BG_FORBIDDEN')
      }
      // Probes and scrapers send the pod's address as Host: these read-only answers are open to any Host.
      for (const path of ['/healthz', '/readyz', '/metrics']) {
        expect((await send(loopback.admin, path, { headers: { host } })).status, `${host} ${path}`).toBe(200)
      }
      for (const path of ['/switch', '/weights', '/rollback']) {
        const reply = await send(loopback.admin, path, {
          headers: { host },
          body: { to: 'green', blue: 0, green: 100 },
        })
        expect(reply.status, `${host} POST ${path}`).toBe(403)
        expect(codeOf(reply)).toBe('BG_FORBIDDEN')
      }
    }
    expect(await stateOf(loopback)).toMatchObject({ active: 'blue', generation: 0 })
    // Attempts to change, refused at the door, are still on the record.
    const events = await eventsOf(loopback.admin)
    expect(events).toHaveLength(9)
    for (const event of events) expect(event).toMatchObject({ result: 'refused', code: 'BG_FORBIDDEN' })
  })

  it('answers every JSON reply, errors included, as data no browser renders or frames', async () => {
    const replies = [
      await send(loopback.admin, '/state'),
      // An error that names what was asked for: the path is in its message.
      await send(loopback.admin, '/console/%3Cscript%3Ealert(1)%3C/script%3E.js'),
      await send(loopback.admin, '/<img/src=x/onerror=alert(1)>'),
      await send(loopback.admin, '/state', { headers: { host: 'evil.example' } }),
    ]
    expect(replies.map((reply) => reply.status)).toEqual([200, 404, 404, 403])
    for (const reply of replies) {
      expect(reply.headers['content-type']).toBe('application/json; charset=utf-8')
      expect(reply.headers['x-content-type-options']).toBe('nosniff')
      expect(reply.headers['content-security-policy']).toBe("default-src 'none'; frame-ancestors 'none'")
    }
  })

  it('answers to the loopback names with any port', async () => {
    const port = new URL(loopback.admin).port
    for (const host of [
      `localhost:${port}`,
      `127.0.0.1:${port}`,
      `[::1]:${port}`,
      'localhost',
      'LocalHost:1',
    ]) {
      expect((await send(loopback.admin, '/state', { headers: { host } })).status, host).toBe(200)
    }
    const reply = await send(loopback.admin, '/weights', {
      headers: { host: `localhost:${port}` },
      body: { blue: 100, green: 0, reason: 'via localhost' },
    })
    expect(reply.status).toBe(200)
  })

  it('answers only to admin.allowedHosts when set', async () => {
    const port = new URL(named.admin).port
    expect(
      (await send(named.admin, '/state', { headers: { host: `bluegreen-admin.internal:${port}` } })).status,
    ).toBe(200)
    expect(
      (await send(named.admin, '/state', { headers: { host: 'BlueGreen-Admin.Internal' } })).status,
    ).toBe(200)
    for (const host of ['evil.example', `evil.example:${port}`, 'bluegreen-admin.internal.evil.example']) {
      const reply = await send(named.admin, '/state', { headers: { host } })
      expect(reply.status, host).toBe(403)
      expect(codeOf(reply)).toBe('BG_FORBIDDEN')
    }
  })

  it('still answers the local CLI (Host 127.0.0.1:PORT from a loopback peer) with admin.allowedHosts set', async () => {
    const port = new URL(named.admin).port
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'localhost']) {
      expect((await send(named.admin, '/state', { headers: { host } })).status, host).toBe(200)
    }
    const { code, stdout, stderr } = await runCli(['status', '--admin', named.admin])
    expect(stderr).toBe('')
    expect(code).toBe(0)
    expect(stdout).toContain('blue')
  })

  it('refuses a change from a foreign Origin or a cross-site fetch with 403, changing nothing', async () => {
    const before = await stateOf(loopback)
    const foreign: Record<string, string>[] = [
      { origin: 'https://evil.example' },
      { origin: 'null' },
      // The admin API's own host on another port, or under another of its names, is another origin.
      { origin: `http://127.0.0.1:${Number(new URL(loopback.admin).port) + 1}` },
      { origin: `http://localhost:${new URL(loopback.admin).port}` },
      { 'sec-fetch-site': 'cross-site' },
      { origin: 'https://evil.example', 'sec-fetch-site': 'same-origin' },
    ]
    for (const headers of foreign) {
      for (const [path, body] of [
        ['/switch', { to: 'green', force: true }],
        ['/weights', { blue: 0, green: 100, force: true }],
        ['/rollback', {}],
      ] as const) {
        const reply = await send(loopback.admin, path, { headers, body })
        expect(reply.status, `${JSON.stringify(headers)} ${path}`).toBe(403)
        expect(codeOf(reply)).toBe('BG_FORBIDDEN')
      }
    }
    expect(await stateOf(loopback)).toEqual(before)
    // A same-origin or same-site fetch without an Origin is not cross-site.
    const sameSite = await send(loopback.admin, '/weights', {
      headers: { 'sec-fetch-site': 'same-site' },
      body: { blue: 100, green: 0 },
    })
    expect(sameSite.status).toBe(200)
    // The console's own page: its Origin names the very Host it calls.
    const ownOrigin = await send(loopback.admin, '/weights', {
      headers: { origin: `http://${new URL(loopback.admin).host}`, 'sec-fetch-site': 'same-origin' },
      body: { blue: 100, green: 0 },
    })
    expect(ownOrigin.status).toBe(200)
  })

  it('lets an origin in admin.allowedOrigins change the state; others still get 403', async () => {
    const host = { host: 'bluegreen-admin.internal' }
    const allowed = await send(named.admin, '/switch', {
      headers: { ...host, origin: 'https://ops.example', 'sec-fetch-site': 'cross-site' },
      body: { to: 'green', reason: 'from the ops console' },
    })
    expect(allowed.status, allowed.text).toBe(200)
    expect(allowed.body).toMatchObject({ active: 'green', reason: 'from the ops console' })
    for (const origin of ['https://ops.example:8443', 'http://ops.example', 'https://evil.example']) {
      const reply = await send(named.admin, '/switch', { headers: { ...host, origin }, body: { to: 'blue' } })
      expect(reply.status, origin).toBe(403)
    }
    expect((await send(named.admin, '/state', { headers: host })).body).toMatchObject({ active: 'green' })
  })

  it('takes changes by POST only: GET /switch?to=green is 405 and changes nothing', async () => {
    const before = await stateOf(loopback)
    for (const path of ['/switch?to=green&force=true', '/weights?blue=0&green=100', '/rollback']) {
      const reply = await send(loopback.admin, path)
      expect(reply.status, path).toBe(405)
      expect(codeOf(reply)).toBe('BG_METHOD_NOT_ALLOWED')
      expect(reply.headers.allow).toBe('POST')
    }
    expect(await stateOf(loopback)).toEqual(before)
  })

  it('routes on the exact path it receives: dot segments, doubled slashes and escapes are no endpoint', async () => {
    const before = await stateOf(loopback)
    for (const path of [
      '//switch',
      '//evil.example/switch',
      '/a/../switch',
      '/./switch',
      '/%73witch',
      '/switch/',
    ]) {
      const reply = await send(loopback.admin, path, { body: { to: 'green', force: true } })
      expect(reply.status, path).toBe(404)
      expect(codeOf(reply)).toBe('BG_NOT_FOUND')
    }
    expect((await send(loopback.admin, '//evil.example/state')).status).toBe(404)
    expect(await stateOf(loopback)).toEqual(before)
  })
})

describe('admin tokens', () => {
  const tokens = {
    admin: 'admin-token-0123456789',
    ci: 'ci-token-0123456789ab',
    deploy: 'deploy-token-0123456789',
  }
  const rig = useColorRig({
    admin: { listen: '127.0.0.1:0', token: tokens.admin, tokens: { ci: tokens.ci, deploy: tokens.deploy } },
  })

  it("keeps GET /mirror/diffs (bodies and headers of users' requests) behind the token; other reads stay open", async () => {
    for (const headers of [{}, { authorization: 'Bearer wrong-token-0123456789' }] as Record<
      string,
      string
    >[]) {
      const refused = await send(rig.proxy.admin, '/mirror/diffs', { headers })
      expect(refused.status, JSON.stringify(headers)).toBe(401)
      expect(codeOf(refused)).toBe('BG_UNAUTHORIZED')
    }
    const allowed = await send(rig.proxy.admin, '/mirror/diffs', {
      headers: { authorization: `Bearer ${tokens.ci}` },
    })
    expect(allowed.status, allowed.text).toBe(200)
    expect(allowed.body).toEqual({ diffs: [] })
    for (const path of ['/mirror', '/state', '/events', '/windows']) {
      expect((await send(rig.proxy.admin, path)).status, path).toBe(200)
    }
    // A read without any token guesses nothing: a console left open without one never locks its operator out.
    for (let i = 0; i < 8; i++) expect((await send(rig.proxy.admin, '/mirror/diffs')).status).toBe(401)
    const change = await send(rig.proxy.admin, '/smoke', {
      headers: { authorization: `Bearer ${tokens.ci}` },
      body: { color: 'blue' },
    })
    expect(change.status, change.text).toBe(200)
  })

  it('accepts each named token and names it in the state and the audit trail', async () => {
    const auth = (token: string) => ({ authorization: `Bearer ${token}` })
    let reply = await send(rig.proxy.admin, '/switch', { headers: auth(tokens.ci), body: { to: 'green' } })
    expect(reply.status).toBe(200)
    expect(reply.body.updatedBy).toBe('ci@127.0.0.1')
    reply = await send(rig.proxy.admin, '/weights', {
      headers: auth(tokens.deploy),
      body: { blue: 50, green: 50 },
    })
    expect(reply.status).toBe(200)
    expect(reply.body.updatedBy).toBe('deploy@127.0.0.1')
    reply = await send(rig.proxy.admin, '/rollback', { headers: auth(tokens.admin), body: {} })
    expect(reply.status).toBe(200)
    expect(reply.body.updatedBy).toBe('admin@127.0.0.1')
    reply = await send(rig.proxy.admin, '/switch', {
      headers: auth('not-a-token-at-all'),
      body: { to: 'blue' },
    })
    expect(reply.status).toBe(401)

    const events = await eventsOf(rig.proxy.admin)
    expect(events.map((event) => [event.actor, event.action, event.result])).toEqual([
      ['127.0.0.1', 'switch', 'refused'],
      ['token:admin', 'rollback', 'accepted'],
      ['token:deploy', 'weights', 'accepted'],
      ['token:ci', 'switch', 'accepted'],
    ])
    const raw = JSON.stringify(events)
    for (const token of [...Object.values(tokens), 'not-a-token-at-all']) expect(raw).not.toContain(token)
  })
})

describe('secrets and start-up rules (child process)', () => {
  let blue: TestServer
  let green: TestServer
  let dir: Awaited<ReturnType<typeof tempDir>>

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    green = await echoUpstream('green')
    dir = await tempDir('bluegreen-security-')
  })
  afterAll(async () => {
    await blue?.close()
    await green?.close()
    await dir?.remove()
  })

  /** `bluegreen serve` expected to refuse to start: its exit code and everything it printed. */
  async function refusedStart(file: string): Promise<{ code: number | null; output: string }> {
    const { code, stdout, stderr } = await runCli(['serve', '--config', file])
    return { code, output: stdout + stderr }
  }

  it('refuses to start with the admin API on a wildcard address and no token: exit 2 naming admin.token', async () => {
    for (const listen of ['0.0.0.0:0', '[::]:0']) {
      const file = await writeConfig(
        dir.path,
        {
          listen: '127.0.0.1:0',
          admin: { listen },
          pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
          state: { path: join(dir.path, 'wildcard.json') },
        },
        'wildcard.json.config.json',
      )
      const { code, output } = await refusedStart(file)
      expect(code, output).toBe(2)
      expect(output).toMatch(/admin\.token: required when admin\.listen is not a loopback address/)
      expect(output).not.toMatch(/\n\s+at /)
      expect(output).not.toContain('bluegreen-proxy started')
    }
  })

  it('never echoes a mistyped token in a config error', async () => {
    const secrets = ['4182736455463728', '5182736455463728', 'a-secret-token-in-the-wrong-place']
    const file = await writeConfig(
      dir.path,
      [
        'listen: "127.0.0.1:0"',
        'admin:',
        `  token: ${secrets[0]}`,
        '  tokens:',
        `    ci: ${secrets[1]}`,
        'pools:',
        `  blue: { upstreams: ["${blue.url}"] }`,
        `  green: { upstreams: ["${green.url}"] }`,
        `state: { path: "${join(dir.path, 'mistyped.json')}" }`,
        '',
      ].join('\n'),
      'mistyped.yaml',
    )
    const first = await refusedStart(file)
    expect(first.code, first.output).toBe(2)
    expect(first.output).toMatch(/admin\.token: /)
    expect(first.output).toMatch(/admin\.tokens\.ci: /)
    const tokensAsText = await writeConfig(
      dir.path,
      {
        listen: '127.0.0.1:0',
        admin: { tokens: secrets[2] },
        pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
      },
      'tokens-as-text.json',
    )
    const second = await refusedStart(tokensAsText)
    expect(second.code, second.output).toBe(2)
    expect(second.output).toMatch(/admin\.tokens: /)
    for (const secret of secrets) {
      expect(first.output + second.output).not.toContain(secret)
      // Not even its first characters: a truncated secret is half a secret.
      expect(first.output + second.output).not.toContain(secret.slice(0, 8))
    }
  })

  it('keeps tokens out of the log, the audit trail and the state files, whatever the calls', async () => {
    const token = 'admin-secret-token-7f3a9c'
    const ciToken = 'ci-secret-token-2b8e4d1f'
    const wrong = 'guess-secret-value-9d2c'
    const statePath = join(dir.path, 'logged', 'state.json')
    const file = await writeConfig(
      dir.path,
      {
        listen: '127.0.0.1:0',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the config file's own ${VAR} syntax
        admin: { listen: '127.0.0.1:0', token: '${TEST_ADMIN_TOKEN}', tokens: { ci: ciToken } },
        pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
        state: { path: statePath },
        log: { level: 'trace', access: true },
        shutdown: { grace: '1s' },
      },
      'logged.json',
    )
    const proxy = await spawnProxy(file, { TEST_ADMIN_TOKEN: token })
    try {
      const auth = (value: string) => ({ authorization: `Bearer ${value}` })
      const calls: [string, Record<string, string>, unknown][] = [
        ['/switch', auth(token), { to: 'green', reason: 'good' }],
        ['/weights', auth(ciToken), { blue: 10, green: 90 }],
        ['/switch', auth(wrong), { to: 'blue' }],
        ['/switch', { authorization: wrong }, { to: 'blue' }],
        ['/weights', auth(ciToken), { blue: 10, green: 91 }],
        ['/switch', auth(token), 'not json'],
        ['/switch', auth(token), { to: 'green', expectedGeneration: 0 }],
        ['/rollback', auth(ciToken), {}],
        ['/switch', { ...auth(token), origin: 'https://evil.example' }, { to: 'blue' }],
      ]
      const statuses = []
      for (const [path, headers, body] of calls)
        statuses.push((await send(proxy.admin, path, { headers, body })).status)
      expect(statuses).toEqual([200, 200, 401, 401, 400, 400, 409, 200, 403])
      // Tokens sent to the public listener are the application's business: forwarded, never logged.
      const forwarded = await send(proxy.url, `/login?token=x`, { headers: auth(token) })
      expect(forwarded.status).toBe(200)
      expect((forwarded.body.headers as Record<string, string>).authorization).toBe(`Bearer ${token}`)

      const events = await eventsOf(proxy.admin)
      expect(events).toHaveLength(calls.length)
      expect(events.map((event) => event.actor)).toContain('token:ci')
      expect(events.map((event) => event.actor)).toContain('token:admin')
      const stored = (
        await Promise.all(
          (
            await readdir(join(dir.path, 'logged'))
          ).map((name) => readFile(join(dir.path, 'logged', name), 'utf8')),
        )
      ).join('\n')
      expect(await proxy.stop()).toBe(0)
      const output = proxy.output()
      // The log did record the calls (so it was looking), just not the secrets.
      expect(output).toContain('switch accepted')
      expect(output).toContain('switch refused')
      for (const secret of [token, ciToken, wrong]) {
        expect(output, 'the log').not.toContain(secret)
        expect(JSON.stringify(events), 'the audit trail').not.toContain(secret)
        expect(stored, 'the state and audit files').not.toContain(secret)
      }
    } finally {
      await proxy.stop('SIGKILL')
    }
  })
})
