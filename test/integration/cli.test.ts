import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type CliResult, killRunningClis, runCli } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import { type Replica, startReplica, waitReady } from '../helpers/replicas.ts'
import {
  type ChildProxy,
  echoUpstream,
  refusedUrl,
  spawnProxy,
  type TestServer,
  tempDir,
  writeConfig,
} from '../helpers/servers.ts'

// `bluegreen` the way an operator or a deploy script runs it: the CLI as a child process, against a proxy that is
// itself a child process. What it prints and its exit code are the interface.

/** The CLI with extra environment variables. */
const runCliWith = (args: string[], env: NodeJS.ProcessEnv = {}) => runCli(args, { env })

/** A refusal as scripts see it: exit 1, nothing on stdout, one line on stderr naming the code. */
function expectRefused(result: CliResult, code: string) {
  expect(result.code, result.stderr).toBe(1)
  expect(result.stdout).toBe('')
  expect(result.stderr).toMatch(/^bluegreen: [^\n]+\n$/)
  expect(result.stderr).toContain(`(${code})`)
}

/** Rows of a table the CLI printed, split on its two-space column gaps. */
function rows(table: string): string[][] {
  return table
    .trimEnd()
    .split('\n')
    .map((line) => line.split(/ {2,}/))
}

async function getJson<T>(url: string): Promise<T> {
  return (await (await fetch(url)).json()) as T
}

afterAll(() => {
  killRunningClis()
})

describe('bluegreen CLI against a running proxy', () => {
  const adminToken = 'admin-token-0123456789'
  const ciToken = 'ci-token-0123456789abcdef'
  let blue: TestServer
  let green: TestServer
  let dir: Awaited<ReturnType<typeof tempDir>>
  let proxy: ChildProxy
  let admin: string[]
  let ci: string[]

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    green = await echoUpstream('green')
    dir = await tempDir('bluegreen-cli-')
    const file = await writeConfig(dir.path, {
      listen: '127.0.0.1:0',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the config file's own ${VAR} syntax
      admin: { listen: '127.0.0.1:0', token: '${TEST_ADMIN_TOKEN}', tokens: { ci: ciToken } },
      pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
      state: { path: join(dir.path, 'state.json') },
      shutdown: { grace: '1s' },
    })
    proxy = await spawnProxy(file, { TEST_ADMIN_TOKEN: adminToken })
    admin = ['--admin', proxy.admin]
    ci = [...admin, '--token', ciToken]
  })
  afterAll(async () => {
    await proxy?.stop()
    await blue?.close()
    await green?.close()
    await dir?.remove()
  })

  it('rollback with nothing to roll back: exit 1 and one line naming BG_NO_PREVIOUS_STATE', async () => {
    expectRefused(await runCliWith(['rollback', ...ci]), 'BG_NO_PREVIOUS_STATE')
  })

  it('status: a readable table, and the admin API answer as it is with --json', async () => {
    const [{ id }] = (await getJson<{ replicas: { id: string }[] }>(`${proxy.admin}/replicas`)).replicas as [
      { id: string },
    ]
    const [table, json] = await Promise.all([
      runCliWith(['status', ...admin]),
      runCliWith(['status', '--json', ...admin]),
    ])
    expect(table.code).toBe(0)
    expect(table.stderr).toBe('')
    expect(table.stdout).toMatch(
      new RegExp(
        [
          '^active {6}blue',
          'weights {5}blue 100 / green 0',
          'generation {2}0',
          'updated {5}\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z by bluegreen',
          'reason {6}initial state',
          // What GET /state says under `replica`, without jq: health, what is open, the watch.
          'upstreams {3}blue  1/1 available, open: 0 request\\(s\\), 0 websocket\\(s\\)',
          ' {12}green 1/1 available, open: 0 request\\(s\\), 0 websocket\\(s\\)',
          'watching {4}nothing',
          `replica {5}${id} applied 0\n$`,
        ].join('\n'),
      ),
    )
    expect(json.code).toBe(0)
    const state = await getJson<Record<string, unknown>>(`${proxy.admin}/state`)
    // The two reads are apart in time, and a health check may run between them: its time and duration move.
    expect(withoutCheckTimes(JSON.parse(json.stdout))).toEqual(withoutCheckTimes(state))
  })

  it('switch green --wait --reason: exit 0, and says which replicas applied it', async () => {
    const result = await runCliWith(['switch', 'green', '--wait', '--reason', 'release 42', ...ci])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stderr).toBe('')
    const [{ id }] = (await getJson<{ replicas: { id: string }[] }>(`${proxy.admin}/replicas`)).replicas as [
      { id: string },
    ]
    expect(result.stdout).toMatch(/^active {6}green$/m)
    expect(result.stdout).toMatch(/^generation {2}1$/m)
    expect(result.stdout).toMatch(/^reason {6}release 42$/m)
    expect(result.stdout).toMatch(/^updated .* by ci@127\.0\.0\.1$/m)
    expect(result.stdout).toContain(`wait        all 1 replica(s) applied it: ${id}\n`)
    expect((await fetch(proxy.url)).headers.get('x-bluegreen-color')).toBe('green')
  })

  it('weights 90 10, then rollback: exit 0 each, and the state follows', async () => {
    const weights = await runCliWith(['weights', '90', '10', ...ci])
    expect(weights.code, weights.stderr).toBe(0)
    expect(weights.stdout).toMatch(/^weights {5}blue 90 \/ green 10$/m)
    expect(weights.stdout).toMatch(/^active {6}blue$/m)

    const rollback = await runCliWith(['rollback', '--reason', 'too early', ...ci])
    expect(rollback.code, rollback.stderr).toBe(0)
    expect(rollback.stdout).toMatch(/^active {6}green$/m)
    expect(rollback.stdout).toMatch(/^weights {5}blue 0 \/ green 100$/m)
    expect(rollback.stdout).toMatch(/^generation {2}3$/m)
    expect(rollback.stdout).toMatch(/^reason {6}too early$/m)
    expect(await getJson(`${proxy.admin}/state`)).toMatchObject({ trigger: 'rollback', generation: 3 })
  })

  it('events: a table newest first, and --json --limit 2', async () => {
    const [table, json, badLimit, usage] = await Promise.all([
      runCliWith(['events', ...admin]),
      runCliWith(['events', '--json', '--limit', '2', ...admin]),
      runCliWith(['events', '--limit', '0', ...admin]),
      runCliWith(['events', '--limit', 'many', ...admin]),
    ])
    expect(table.code, table.stderr).toBe(0)
    const [header, ...body] = rows(table.stdout)
    expect(header).toEqual(['time', 'actor', 'action', 'to', 'result', 'reason'])
    expect(body.map((row) => row.slice(1))).toEqual([
      ['token:ci', 'rollback', 'green 0/100', 'accepted #3', 'too early'],
      ['token:ci', 'weights', 'blue 90/10', 'accepted #2', 'weights blue 90 / green 10'],
      ['token:ci', 'switch', 'green 0/100', 'accepted #1', 'release 42'],
      ['token:ci', 'rollback', '-', 'refused BG_NO_PREVIOUS_STATE'],
    ])
    for (const row of body) expect(Number.isNaN(Date.parse(row[0]!))).toBe(false)

    expect(json.code).toBe(0)
    const { events } = JSON.parse(json.stdout) as { events: { action: string; generation: number }[] }
    expect(events.map((event) => [event.action, event.generation])).toEqual([
      ['rollback', 3],
      ['weights', 2],
    ])

    // Bad usage, caught before the admin API is asked.
    expect(badLimit.code).toBe(2)
    expect(badLimit.stderr).toBe('bluegreen: --limit takes a whole number from 1 to 1000\n')
    expect(usage.code).toBe(2)
  })

  it('replicas: a table of every live replica and the generation it applied, and --json', async () => {
    const [table, json] = await Promise.all([
      runCliWith(['replicas', ...admin]),
      runCliWith(['replicas', '--json', ...admin]),
    ])
    expect(table.code, table.stderr).toBe(0)
    const [header, ...body] = rows(table.stdout)
    expect(header).toEqual(['id', 'host', 'pid', 'generation', 'status', 'last seen'])
    expect(body).toHaveLength(1)
    expect(body[0]![2]).toBe(String(proxy.child.pid))
    expect(body[0]![3]).toBe('3')
    expect(body[0]![4]).toBe('live')
    expect(JSON.parse(json.stdout)).toMatchObject({
      generation: 3,
      replicas: [{ pid: proxy.child.pid, generation: 3 }],
      missing: [],
    })
    // The one replica the file store knows is this live one, which cannot be forgotten.
    const [live, usage] = await Promise.all([
      runCliWith(['replicas', 'forget', body[0]![0]!, ...ci]),
      runCliWith(['replicas', 'forget', ...ci]),
    ])
    expectRefused(live, 'BG_REPLICA_LIVE')
    expect(usage.code).toBe(2)
    expect(usage.stderr).toContain('replicas forget needs 1 argument')
  })

  it('--help on each command: its usage and options, exit 0, without calling the admin API', async () => {
    // Nothing listens there: a command that called it would fail.
    const nowhere = ['--admin', await refusedUrl()]
    const commands = ['status', 'switch', 'weights', 'rollback', 'events', 'replicas', 'serve', 'demo']
    const results = await Promise.all(commands.map((command) => runCliWith([command, '--help', ...nowhere])))
    results.forEach((result, index) => {
      const command = commands[index]!
      expect(result.code, command).toBe(0)
      expect(result.stderr, command).toBe('')
      expect(result.stdout, command).toMatch(new RegExp(`^bluegreen ${command}\\b`))
    })
    for (const index of [1, 2, 3]) {
      for (const option of ['--wait', '--force', '--reason', '--expected-generation', '--token', '--admin']) {
        expect(results[index]!.stdout, `${commands[index]} ${option}`).toContain(option)
      }
    }
    expect(results[4]!.stdout).toContain('--limit')
    expect((await runCliWith(['switch', '-h', ...nowhere])).stdout).toBe(results[1]!.stdout)
  })

  it('takes the token from --token or BLUEGREEN_ADMIN_TOKEN, --token first', async () => {
    // Two different splits, so that both are changes whichever lands first.
    const [fromEnv, flagWins, viaEnv] = await Promise.all([
      runCliWith(['weights', '10', '90', '--reason', 'env', ...admin], { BLUEGREEN_ADMIN_TOKEN: adminToken }),
      runCliWith(['weights', '20', '80', '--token', ciToken, ...admin], {
        BLUEGREEN_ADMIN_TOKEN: 'not-the-token-0123456789',
      }),
      // BLUEGREEN_ADMIN names the admin API the same way.
      runCliWith(['status'], { BLUEGREEN_ADMIN: proxy.admin }),
    ])
    expect(fromEnv.code, fromEnv.stderr).toBe(0)
    expect(fromEnv.stdout).toMatch(/^updated .* by admin@127\.0\.0\.1$/m)
    expect(flagWins.code, flagWins.stderr).toBe(0)
    expect(flagWins.stdout).toMatch(/^updated .* by ci@127\.0\.0\.1$/m)
    expect(viaEnv.code).toBe(0)
  })

  it('a wrong or missing token: exit 1 with a one-line reason, and nothing changes', async () => {
    const before = await getJson<{ generation: number }>(`${proxy.admin}/state`)
    const refused = await Promise.all([
      runCliWith(['switch', 'blue', ...admin, '--token', 'wrong-token-0123456789']),
      runCliWith(['rollback', ...admin], { BLUEGREEN_ADMIN_TOKEN: 'wrong-token-0123456789' }),
      runCliWith(['weights', '50', '50', ...admin]),
    ])
    for (const result of refused) expectRefused(result, 'BG_UNAUTHORIZED')
    expect(refused[0]!.stderr).toMatch(/Bearer/)
    expect((await getJson<{ generation: number }>(`${proxy.admin}/state`)).generation).toBe(before.generation)
    // A right token afterwards clears the slate.
    expect((await runCliWith(['switch', 'blue', ...ci])).code).toBe(0)
  })

  it('rollout COLOR starts a progressive rollout that status shows, and rollout abort returns', async () => {
    const started = await runCliWith([
      'rollout',
      'green',
      '--steps',
      '30,100',
      '--step-seconds',
      '600',
      ...ci,
    ])
    expect(started.code, started.stderr).toBe(0)
    expect(started.stdout).toMatch(/weights\s+blue 70 \/ green 30/)
    expect(started.stdout).toMatch(/rollout\s+running, step 1\/2 \(30% to green\)/)
    expectRefused(await runCliWith(['rollout', 'green', ...ci]), 'BG_ROLLOUT_RUNNING')
    const status = await runCliWith(['status', ...admin])
    expect(status.stdout).toMatch(/rollout\s+running/)
    const aborted = await runCliWith(['rollout', 'abort', ...ci])
    expect(aborted.code, aborted.stderr).toBe(0)
    expect(aborted.stdout).toMatch(/rollout\s+aborted/)
    expectRefused(await runCliWith(['rollout', 'abort', ...ci]), 'BG_NO_ROLLOUT')
    const bad = await runCliWith(['rollout', 'green', '--steps', '10,x', ...ci])
    expect(bad.code).toBe(2)
  })

  it('a change to the state in force: exit 0, saying plainly that nothing changed', async () => {
    const change = async (path: string, body: unknown) => {
      const response = await fetch(`${proxy.admin}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${ciToken}` },
        body: JSON.stringify(body),
      })
      expect(response.status).toBe(200)
      return (await response.json()) as { generation: number }
    }
    await change('/switch', { to: 'blue' })
    const { generation } = await change('/switch', { to: 'green' })

    const [again, json] = await Promise.all([
      runCliWith(['switch', 'green', '--wait', ...ci]),
      runCliWith(['switch', 'green', '--json', ...ci]),
    ])
    expect(again.code, again.stderr).toBe(0)
    expect(again.stderr).toBe('')
    expect(again.stdout).toMatch(
      new RegExp(
        `^already: all traffic on green \\(generation ${generation}\\); nothing changed\nwait {8}all 1 replica\\(s\\) applied it`,
      ),
    )
    expect(JSON.parse(json.stdout)).toMatchObject({ generation, changed: false })

    // The rollback returns to the last routing that differs, blue, however often green was asked for.
    const rollback = await runCliWith(['rollback', ...ci])
    expect(rollback.code, rollback.stderr).toBe(0)
    expect(rollback.stdout).toMatch(/^active {6}blue$/m)
    expect((await fetch(proxy.url)).headers.get('x-bluegreen-color')).toBe('blue')

    const split = await change('/weights', { blue: 90, green: 10 })
    const weights = await runCliWith(['weights', '90', '10', ...ci])
    expect(weights.code, weights.stderr).toBe(0)
    expect(weights.stdout).toBe(
      `already: blue 90 / green 10 (generation ${split.generation}); nothing changed\n`,
    )
    const events = rows((await runCliWith(['events', '--limit', '1', ...admin])).stdout)
    expect(events[1]!.slice(2, 5)).toEqual(['weights', 'blue 90/10', `unchanged #${split.generation}`])
  })
})

describe('bluegreen switch --wait across Redis replicas', () => {
  let blue: TestServer
  let green: TestServer
  let redis: RedisProcess
  let replicas: Replica[] = []

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    green = await echoUpstream('green')
    redis = await startRedis()
    const options = {
      // A replica counts as live for three heartbeats: longer than the wait, so the frozen one is still listed
      // (and so still waited for) when the wait gives up, however slowly the CLI starts.
      redis: { url: redis.url, key: 'bluegreen:cli-wait', heartbeatInterval: '2s' },
      blue: blue.url,
      green: green.url,
      waitTimeout: '500ms',
    }
    replicas = await Promise.all([startReplica(options), startReplica(options)])
    await Promise.all(replicas.map((replica) => waitReady(replica)))
  })
  afterAll(async () => {
    for (const replica of replicas) replica.child.kill('SIGCONT')
    await Promise.all(replicas.map((replica) => replica.close()))
    await redis?.stop()
    await blue?.close()
    await green?.close()
  })

  const idsOf = async (replica: Replica) =>
    (await getJson<{ replicas: { id: string }[] }>(`${replica.admin}/replicas`)).replicas.map(
      (entry) => entry.id,
    )

  it('exits 0 naming both replicas when both apply the change', async () => {
    const ids = await eventually(async () => {
      const listed = await idsOf(replicas[0]!)
      return listed.length === 2 ? listed : undefined
    })
    const result = await runCliWith(['switch', 'green', '--wait', '--admin', replicas[0]!.admin])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toContain(`wait        all 2 replica(s) applied it: ${ids.join(', ')}\n`)
  })

  it('exits 3 naming the replica that did not apply it in time (frozen with SIGSTOP)', async () => {
    const [live, frozen] = replicas as [Replica, Replica]
    const frozenId = (await getJson<{ replica: { id: string } }>(`${frozen.admin}/state`)).replica.id
    const liveId = (await getJson<{ replica: { id: string } }>(`${live.admin}/state`)).replica.id
    frozen.child.kill('SIGSTOP')
    try {
      const result = await runCliWith([
        'switch',
        'blue',
        '--wait',
        '--reason',
        'frozen replica',
        '--admin',
        live.admin,
      ])
      expect(result.code, result.stdout + result.stderr).toBe(3)
      expect(result.stderr).toBe('')
      // The change stands; the output says who has it and who does not.
      expect(result.stdout).toMatch(/^active {6}blue$/m)
      expect(result.stdout).toMatch(
        new RegExp(`^wait {8}NOT applied in time by: ${frozenId} \\(at \\d+\\)$`, 'm'),
      )
      expect(result.stdout).toMatch(new RegExp(`^ {12}applied by: ${liveId}$`, 'm'))
      const json = await runCliWith(['switch', 'blue', '--wait', '--json', '--admin', live.admin])
      expect(json.code).toBe(3)
      expect(JSON.parse(json.stdout).wait).toMatchObject({ complete: false, pending: [{ id: frozenId }] })
    } finally {
      frozen.child.kill('SIGCONT')
    }
    // Thawed, it catches up.
    await eventually(
      async () => (await getJson<{ active: string }>(`${frozen.admin}/state`)).active === 'blue',
    )
  })
})

/** The value with every health check's `lastCheck` left out, at any depth. */
function withoutCheckTimes(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutCheckTimes)
  if (typeof value !== 'object' || value === null) return value
  return Object.fromEntries(
    Object.entries(value)
      .filter(([key]) => key !== 'lastCheck')
      .map(([key, inner]) => [key, withoutCheckTimes(inner)]),
  )
}
