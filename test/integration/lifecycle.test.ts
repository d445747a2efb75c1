import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import {
  Agent,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type ServerResponse,
} from 'node:http'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { adminPost } from '../helpers/admin.ts'
import { killRunningClis, runCli } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import {
  type ChildProxy,
  CLI,
  freePort,
  spawnProxy,
  startServer,
  type TestServer,
  tempDir,
  writeConfig,
} from '../helpers/servers.ts'

// `bluegreen` as operators run it: a child process per proxy, signals, exit codes and what it prints.

/** One line, no stack trace: what a user error must look like on stderr. */
function expectOneLineReason(stderr: string, pattern: RegExp) {
  expect(stderr).toMatch(/^bluegreen: [^\n]+\n$/)
  expect(stderr).toMatch(pattern)
  expect(stderr).not.toMatch(/\n\s+at /)
}

/** An upstream naming its color; /held requests wait until release(). */
async function heldUpstream(name: string) {
  const held: ServerResponse[] = []
  let received = 0
  const answer = (res: ServerResponse) => {
    if (res.destroyed) return
    res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': name })
    res.end(name)
  }
  const server = await startServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    if (req.url?.startsWith('/held')) {
      received++
      held.push(res)
    } else answer(res)
  })
  return {
    server,
    held: () => received,
    release: () => {
      for (const res of held.splice(0)) answer(res)
    },
  }
}

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: string
  socket: Socket
}

function get(agent: Agent | false, url: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent })
    let socket: Socket | undefined
    req.on('socket', (raw: Socket) => {
      socket = raw
    })
    req.on('error', reject)
    req.on('response', (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('error', reject)
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, socket: socket! }),
      )
    })
    req.end()
  })
}

function connectionRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(false)
    })
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'))
  })
}

const portOf = (url: string) => Number(new URL(url).port)

describe('lifecycle', () => {
  let blue: Awaited<ReturnType<typeof heldUpstream>>
  let green: TestServer
  let dir: { path: string; remove(): Promise<void> }
  const children: ChildProxy[] = []

  beforeAll(async () => {
    blue = await heldUpstream('blue')
    green = (await heldUpstream('green')).server
    dir = await tempDir()
  })
  afterEach(async () => {
    blue.release()
    for (const child of children.splice(0)) {
      if (child.child.exitCode === null && child.child.signalCode === null) child.child.kill('SIGKILL')
      await child.exited
    }
  })
  afterAll(async () => {
    killRunningClis()
    await blue?.server.close()
    await green?.close()
    await dir?.remove()
  })

  let configs = 0
  /** Writes a config for the two test upstreams; each call gets its own state file unless `statePath` is given. */
  async function config(extra: Record<string, unknown> = {}, statePath?: string): Promise<string> {
    configs++
    return writeConfig(
      dir.path,
      {
        listen: '127.0.0.1:0',
        admin: { listen: '127.0.0.1:0' },
        pools: { blue: { upstreams: [blue.server.url] }, green: { upstreams: [green.url] } },
        state: { path: statePath ?? join(dir.path, `state-${configs}.json`) },
        shutdown: { grace: '5s' },
        ...extra,
      },
      `config-${configs}.json`,
    )
  }

  async function start(file: string, env: NodeJS.ProcessEnv = {}): Promise<ChildProxy> {
    const child = await spawnProxy(file, env)
    children.push(child)
    return child
  }

  const colorOf = async (url: string) => (await fetch(url)).headers.get('x-bluegreen-color')

  describe('configuration errors', () => {
    it('exits 2 and lists every problem with its key path, without a stack trace', async () => {
      const file = await writeConfig(
        dir.path,
        [
          'listen: "nowhere"',
          'admin:',
          '  listen: "127.0.0.1:0"',
          '  tokn: "x"',
          'pools:',
          '  blue: { upstreams: ["ftp://10.0.0.1"] }',
          '  green: { upstreams: [5] }',
          'state:',
          '  initial: red',
          'routing:',
          '  sticky: { mode: sometimes }',
          'shutdown:',
          '  grace: soon',
          'proxy:',
          // biome-ignore lint/suspicious/noTemplateCurlyInString: the config file's own ${VAR} syntax
          '  colorHeader: "${BLUEGREEN_TEST_SURELY_UNSET}"',
          '',
        ].join('\n'),
        'invalid.yaml',
      )
      const result = await runCli(['serve', '--config', file])
      expect(result.code).toBe(2)
      for (const path of [
        'listen',
        'admin.tokn',
        'pools.blue.upstreams[0]',
        'pools.green.upstreams[0]',
        'state.initial',
        'routing.sticky.mode',
        'shutdown.grace',
        'proxy.colorHeader',
      ]) {
        expect(result.stderr).toMatch(new RegExp(`^  ${path.replace(/[.[\]]/g, '\\$&')}: .+$`, 'm'))
      }
      expect(result.stderr).toMatch(
        /^bluegreen: invalid configuration, 8 problem\(s\) \(BG_CONFIG_INVALID\):\n/,
      )
      expect(result.stderr).toMatch(/did you mean "token"/)
      expect(result.stderr).toMatch(/BLUEGREEN_TEST_SURELY_UNSET is not set/)
      expect(result.stderr).not.toMatch(/\n\s+at /)
      expect(result.stdout).toBe('')
    })

    it('exits 1 naming the listener and address when a port is taken, having written nothing to disk', async () => {
      const taken = await startServer((_req, res) => res.end())
      try {
        for (const listener of ['proxy', 'admin'] as const) {
          const statePath = join(dir.path, `never-written-${listener}.json`)
          const address = `127.0.0.1:${taken.port}`
          const file = await config(
            listener === 'proxy' ? { listen: address } : { admin: { listen: address } },
            statePath,
          )
          const result = await runCli(['serve', '--config', file])
          expect(result.code, listener).toBe(1)
          expectOneLineReason(
            result.stderr,
            new RegExp(
              `^bluegreen: the ${listener} listener cannot listen on ${address}: .*\\(EADDRINUSE\\)\n$`,
            ),
          )
          // No state file, lock or audit trail left behind by a proxy that never served.
          for (const path of [statePath, `${statePath}.lock`, `${statePath}.events.jsonl`]) {
            expect(existsSync(path), path).toBe(false)
          }
        }
      } finally {
        await taken.close()
      }
    })

    it('exits 2 with a one-line message for a missing or unparsable config file', async () => {
      const missing = join(dir.path, 'does-not-exist.yaml')
      const broken = await writeConfig(dir.path, '{"listen": ', 'broken.json')
      const [result, parsed, viaEnv] = await Promise.all([
        runCli(['serve', '--config', missing]),
        runCli(['serve', '--config', broken]),
        runCli(['serve'], { env: { BLUEGREEN_CONFIG: missing } }),
      ])
      expect(result.code).toBe(2)
      expectOneLineReason(
        result.stderr,
        /cannot read config file .*does-not-exist\.yaml.*ENOENT.* \(BG_CONFIG_UNREADABLE\)\n$/,
      )
      expect(parsed.code).toBe(2)
      expect(parsed.stderr).toMatch(
        /^bluegreen: cannot parse config file .*broken\.json:1:\d+.*\(BG_CONFIG_UNREADABLE\)/,
      )
      expect(parsed.stderr).not.toMatch(/\n\s+at /)
      expect(viaEnv.code).toBe(2)
      expectOneLineReason(viaEnv.stderr, /cannot read config file/)
    })
  })

  describe('state across processes', () => {
    it("resolves a relative state.path against the config file's directory, not the current one", async () => {
      const configDir = await tempDir('bluegreen-config-dir-')
      const elsewhere = await tempDir('bluegreen-cwd-')
      try {
        const file = await writeConfig(configDir.path, {
          listen: '127.0.0.1:0',
          admin: { listen: '127.0.0.1:0' },
          pools: { blue: { upstreams: [blue.server.url] }, green: { upstreams: [green.url] } },
          state: { path: './relative-state.json' },
        })
        const child = await spawnProxy(file, {}, { cwd: elsewhere.path })
        children.push(child)
        const switched = await adminPost(child.admin, '/switch', { to: 'green', reason: 'relative paths' })
        expect(switched.status).toBe(200)
        // The state file and the audit trail beside it are in the config's directory.
        expect(existsSync(join(configDir.path, 'relative-state.json'))).toBe(true)
        expect(existsSync(join(configDir.path, 'relative-state.json.events.jsonl'))).toBe(true)
        expect(await readdir(elsewhere.path)).toEqual([])
        await child.stop()
      } finally {
        await configDir.remove()
        await elsewhere.remove()
      }
    })

    it('follows a switch made by another process on the same state file, and keeps it across a restart', async () => {
      const statePath = join(dir.path, 'shared-state.json')
      const firstConfig = await config({}, statePath)
      const [first, second] = await Promise.all([start(firstConfig), start(await config({}, statePath))])
      expect(await colorOf(first.url)).toBe('blue')
      expect(await colorOf(second.url)).toBe('blue')

      const switched = await adminPost(second.admin, '/switch', { to: 'green', reason: 'from the second' })
      expect(switched.status).toBe(200)
      await eventually(async () => (await colorOf(first.url)) === 'green', {
        message: 'the first proxy to follow the switch made through the second',
      })
      const state = (await (await fetch(`${first.admin}/state`)).json()) as Record<string, unknown>
      expect(state).toMatchObject({ active: 'green', generation: 1, replica: { appliedGeneration: 1 } })

      // And the other way round, through a weighted split.
      expect((await adminPost(first.admin, '/weights', { blue: 50, green: 50 })).status).toBe(200)
      expect((await adminPost(first.admin, '/switch', { to: 'blue' })).status).toBe(200)
      await eventually(async () => (await colorOf(second.url)) === 'blue', {
        message: 'the second to follow',
      })
      expect(
        (await adminPost(second.admin, '/switch', { to: 'green', reason: 'before restart' })).status,
      ).toBe(200)
      await eventually(async () => (await colorOf(first.url)) === 'green', { message: 'the first to follow' })

      // Both stop; a restart on the same state file comes back green, not state.initial (blue).
      expect(await Promise.all([first.stop('SIGTERM'), second.stop('SIGTERM')])).toEqual([0, 0])
      const restarted = await start(firstConfig)
      expect(await colorOf(restarted.url)).toBe('green')
      const after = (await (await fetch(`${restarted.admin}/state`)).json()) as Record<string, unknown>
      expect(after).toMatchObject({ active: 'green', generation: 4, reason: 'before restart' })
    })
  })

  describe('graceful shutdown', () => {
    it('fails readiness, serves through shutdown.delay, then drains: in flight finish, new refused, idle closed, exit 0', async () => {
      const proxy = await start(await config({ shutdown: { delay: '1s', grace: '5s' } }))
      const idleAgent = new Agent({ keepAlive: true })
      const busyAgent = new Agent({ keepAlive: true, maxSockets: 4 })
      try {
        // A keep-alive connection that has served a request and sits idle.
        const idle = await get(idleAgent, `${proxy.url}/fast`)
        expect(idle.headers.connection).toBe('keep-alive')
        let idleClosed = false
        idle.socket.once('close', () => {
          idleClosed = true
        })

        const before = blue.held()
        const inFlight = Array.from({ length: 4 }, (_, index) =>
          get(busyAgent, `${proxy.url}/held?n=${index}`),
        )
        await eventually(() => blue.held() === before + 4, { message: 'the requests to reach the upstream' })

        proxy.child.kill('SIGTERM')
        await eventually(async () => (await fetch(`${proxy.admin}/readyz`)).status === 503, {
          message: 'readiness to fail',
        })
        // During the delay load balancers are still noticing: new connections are still served.
        const duringDelay = await get(false, `${proxy.url}/during-delay`)
        expect(duringDelay.status).toBe(200)

        // Then the drain: the listener closes, idle connections go, readiness stays failed.
        await eventually(() => connectionRefused(portOf(proxy.url)), {
          timeout: 5000,
          message: 'new connections to be refused',
        })
        await eventually(() => idleClosed, { message: 'the idle keep-alive connection to be closed' })
        expect((await fetch(`${proxy.admin}/readyz`)).status).toBe(503)
        // Still draining: the held requests keep the process alive.
        expect(proxy.child.exitCode).toBeNull()

        blue.release()
        for (const answer of await Promise.all(inFlight)) {
          expect(answer.status).toBe(200)
          expect(answer.body).toBe('blue')
          // Their connections are not kept: the proxy is going away.
          expect(answer.headers.connection).toBe('close')
        }
        expect(await proxy.exited).toBe(0)
        expect(proxy.output()).toMatch(/shutdown complete/)
      } finally {
        idleAgent.destroy()
        busyAgent.destroy()
      }
    })

    it('cuts a request still running when shutdown.grace is over and still exits 0', async () => {
      const proxy = await start(await config({ shutdown: { grace: '300ms' } }))
      const before = blue.held()
      const stuck = get(false, `${proxy.url}/held`).then(
        (answer) => answer,
        (error: Error) => error,
      )
      await eventually(() => blue.held() === before + 1, { message: 'the request to reach the upstream' })
      const signalledAt = performance.now()
      proxy.child.kill('SIGTERM')
      expect(await proxy.exited).toBe(0)
      const elapsed = performance.now() - signalledAt
      expect(elapsed).toBeGreaterThanOrEqual(250)
      expect(elapsed).toBeLessThan(3000)
      const outcome = await stuck
      expect(outcome).toBeInstanceOf(Error)
      expect(proxy.output()).toMatch(/grace period over/)
    })

    it('reloads on SIGHUP (systemd ExecReload, nginx habits): keeps serving, drains nothing, a later SIGTERM still drains', async () => {
      const proxy = await start(await config())
      const before = blue.held()
      const agent = new Agent({ keepAlive: true })
      try {
        const inFlight = get(agent, `${proxy.url}/held`)
        await eventually(() => blue.held() === before + 1, { message: 'the request to reach the upstream' })
        proxy.child.kill('SIGHUP')
        await eventually(() => /"signal":"SIGHUP"/.test(proxy.output()), { message: 'SIGHUP to be logged' })
        // The file has not changed: the reload says so, and nothing else happens.
        await eventually(() => /"by":"signal:SIGHUP".*config reload unchanged/.test(proxy.output()), {
          message: 'the reload to be logged',
        })
        expect(proxy.child.exitCode).toBeNull()
        expect(proxy.child.signalCode).toBeNull()
        expect((await fetch(`${proxy.admin}/readyz`)).status).toBe(200)
        expect((await get(false, `${proxy.url}/after-hup`)).status).toBe(200)
        blue.release()
        const held = await inFlight
        expect(held.status).toBe(200)
        // Not draining: the connection is kept.
        expect(held.headers.connection).toBe('keep-alive')
        // SIGHUP did not count as a first signal: SIGTERM drains and exits 0, not at once with 1.
        proxy.child.kill('SIGTERM')
        expect(await proxy.exited).toBe(0)
        expect(proxy.output()).toMatch(/shutdown complete/)
      } finally {
        agent.destroy()
      }
    })

    it('exits at once, non-zero, on a second signal during the drain', async () => {
      const proxy = await start(await config({ shutdown: { grace: '20s' } }))
      const before = blue.held()
      const stuck = get(false, `${proxy.url}/held`).catch((error: Error) => error)
      await eventually(() => blue.held() === before + 1, { message: 'the request to reach the upstream' })
      proxy.child.kill('SIGTERM')
      await eventually(async () => (await fetch(`${proxy.admin}/readyz`)).status === 503, {
        message: 'the drain to start',
      })
      proxy.child.kill('SIGINT')
      expect(await proxy.exited).toBe(1)
      expect(await stuck).toBeInstanceOf(Error)
    })
  })

  describe('CLI client commands', () => {
    it('status, switch and weights against a running proxy', async () => {
      const proxy = await start(
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the config file's own ${VAR} syntax
        await config({ admin: { listen: '127.0.0.1:0', token: '${TEST_ADMIN_TOKEN}' } }),
        {
          TEST_ADMIN_TOKEN: 'secret',
        },
      )
      const admin = ['--admin', proxy.admin]

      const status = await runCli(['status', ...admin])
      expect(status.code).toBe(0)
      expect(status.stderr).toBe('')
      expect(status.stdout).toMatch(/^active\s+blue$/m)
      expect(status.stdout).toMatch(/^weights\s+blue 100 \/ green 0$/m)
      expect(status.stdout).toMatch(/^generation\s+0$/m)

      const switched = await runCli(['switch', 'green', '--reason', 'ship it', '--token', 'secret', ...admin])
      expect(switched.code).toBe(0)
      expect(switched.stdout).toMatch(/^active\s+green$/m)
      expect(switched.stdout).toMatch(/^reason\s+ship it$/m)
      expect(await colorOf(proxy.url)).toBe('green')

      const weights = await runCli(['weights', '90', '10', ...admin], {
        env: { BLUEGREEN_ADMIN_TOKEN: 'secret' },
      })
      expect(weights.code).toBe(0)
      expect(weights.stdout).toMatch(/^weights\s+blue 90 \/ green 10$/m)
      expect(weights.stdout).toMatch(/^active\s+blue$/m)

      const json = await runCli(['status', '--json'], { env: { BLUEGREEN_ADMIN: proxy.admin } })
      expect(json.code).toBe(0)
      expect(JSON.parse(json.stdout)).toMatchObject({
        active: 'blue',
        weights: { blue: 90, green: 10 },
        generation: 2,
      })

      // Refusals by the admin API: exit 1 with the reason and its code on one line.
      const token = ['--token', 'secret']
      const [noToken, badSum, stale] = await Promise.all([
        runCli(['switch', 'green', ...admin]),
        runCli(['weights', '60', '50', ...token, ...admin]),
        runCli(['switch', 'green', '--expected-generation', '0', ...token, ...admin]),
      ])
      expect(noToken.code).toBe(1)
      expectOneLineReason(noToken.stderr, /Bearer.*\(BG_UNAUTHORIZED\)/)
      // Weights that do not add up are bad usage, caught before the admin API is asked.
      expect(badSum.code).toBe(2)
      expectOneLineReason(badSum.stderr, /weights must add up to 100 \(60 \+ 50 = 110\)/)
      expect(stale.code).toBe(1)
      expectOneLineReason(stale.stderr, /\(BG_GENERATION_CONFLICT\)/)
      const forced = await runCli([
        'switch',
        'blue',
        '--force',
        '--expected-generation',
        '2',
        '--token',
        'secret',
        ...admin,
      ])
      expect(forced.code).toBe(0)
      expect(forced.stdout).toMatch(/^generation\s+3$/m)
    })

    it('exits 1 with a one-line reason when the admin API cannot be reached', async () => {
      const port = await freePort()
      const results = await Promise.all(
        [['status'], ['weights', '50', '50']].map((args) =>
          runCli([...args, '--admin', `http://127.0.0.1:${port}`]),
        ),
      )
      for (const result of results) {
        expect(result.code).toBe(1)
        expectOneLineReason(
          result.stderr,
          new RegExp(`cannot reach the admin API at http://127.0.0.1:${port} \\(ECONNREFUSED\\)`),
        )
        expect(result.stdout).toBe('')
      }
    })

    it('exits 2 for bad usage, before calling anything', async () => {
      const cases = [
        ['serve'],
        ['switch', 'purple'],
        ['switch', 'green', 'blue'],
        ['weights', '90'],
        ['weights', '', '100'],
        ['status', 'now'],
        ['switch', 'green', '--expected-generation', 'seven'],
        ['frobnicate', '--bogus'],
        ['status', '--admin', 'localhost:9090'],
      ]
      const results = await Promise.all(
        cases.map((args) => runCli(args, { env: { BLUEGREEN_CONFIG: undefined } })),
      )
      results.forEach((result, index) => {
        expect(result.code, cases[index]!.join(' ')).toBe(2)
        expectOneLineReason(result.stderr, /./)
      })
      const help = await runCli(['--help'])
      expect(help.code).toBe(0)
      expect(help.stdout).toMatch(/bluegreen status/)
    })
  })

  it('demo: sample upstreams, proxy and admin on loopback, preview on, stops cleanly', async () => {
    const cwd = await tempDir('bluegreen-demo-')
    const child = spawn(process.execPath, [CLI, 'demo', '--port', '0', '--admin-port', '0'], {
      cwd: cwd.path,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let output = ''
    child.stdout.on('data', (chunk) => {
      output += chunk
    })
    child.stderr.on('data', (chunk) => {
      output += chunk
    })
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    try {
      const [, proxyUrl, adminUrl] = await eventually(
        () => /proxy\s+(http:\/\/127\.0\.0\.1:\d+)[\s\S]*admin\s+(http:\/\/127\.0\.0\.1:\d+)/.exec(output),
        { timeout: 15_000, message: 'the demo instructions' },
      )
      // The banner comes in one piece, after the start-up lines, not interleaved with them.
      await eventually(() => output.includes('Ctrl-C stops it.'), { message: 'the whole banner' })
      const banner = output.slice(output.indexOf('bluegreen demo is running'))
      expect(banner.slice(0, banner.indexOf('Ctrl-C stops it.'))).not.toMatch(/"level"|INFO/)
      expect(output.indexOf('bluegreen-proxy started'), output).toBeLessThan(
        output.indexOf('bluegreen demo is running'),
      )
      const response = await fetch(`${proxyUrl}/hello`)
      expect(response.headers.get('x-bluegreen-color')).toBe('blue')
      expect(await response.json()).toMatchObject({ color: 'blue', path: '/hello' })
      const preview = await fetch(`${proxyUrl}/`, { headers: { 'x-bluegreen-preview': 'green' } })
      expect(preview.headers.get('x-bluegreen-color')).toBe('green')
      expect((await adminPost(adminUrl!, '/switch', { to: 'green' })).status).toBe(200)
      expect((await fetch(proxyUrl!)).headers.get('x-bluegreen-color')).toBe('green')
      expect(existsSync(join(cwd.path, '.bluegreen-demo', 'state.json'))).toBe(true)
      child.kill('SIGTERM')
      expect(await exited).toBe(0)
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL')
      await exited
      await cwd.remove()
    }
  })
})
