import type { ChildProcess } from 'node:child_process'
import type { ServerResponse } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { killRunningClis, runCli, spawnCollecting } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import {
  type ChildProxy,
  CLI,
  echoUpstream,
  refusedUrl,
  spawnProxy,
  startServer,
  type TestServer,
  tempDir,
  writeConfig,
} from '../helpers/servers.ts'

// What `bluegreen status` tells an operator without jq (upstream health, the drain, the watch, the rollout's
// progress), `status --watch`, `events --follow`, and the 412 hint in the CLI's own words. Against a proxy whose
// green pool is down.

/** A CLI that keeps printing, read as it goes and killed by the test. */
interface Streaming {
  output: () => string
  stop(): void
}

const streaming = new Set<ChildProcess>()

function streamCli(args: string[]): Streaming {
  const { child, output } = spawnCollecting(process.execPath, [CLI, ...args], {
    env: { ...process.env, BLUEGREEN_ADMIN: undefined, BLUEGREEN_ADMIN_TOKEN: undefined },
  })
  streaming.add(child)
  return {
    output,
    stop: () => {
      child.kill('SIGTERM')
      streaming.delete(child)
    },
  }
}

afterAll(() => {
  killRunningClis()
  for (const child of streaming) child.kill('SIGKILL')
})

describe('bluegreen status, --watch and events --follow', () => {
  const token = 'status-token-0123456789'
  let blue: TestServer
  let down: string
  let dir: Awaited<ReturnType<typeof tempDir>>
  let proxy: ChildProxy
  let admin: string[]

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    down = await refusedUrl()
    dir = await tempDir('bluegreen-cli-status-')
    const file = await writeConfig(dir.path, {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0', token },
      pools: {
        blue: { upstreams: [blue.url] },
        green: { upstreams: [down], healthCheck: { interval: '100ms', unhealthyThreshold: 1 } },
      },
      state: { path: join(dir.path, 'state.json') },
      // A forced switch to the dead green is watched, not rolled back at once.
      rollback: { evaluateEvery: '100ms', unavailableFor: 0 },
      drain: { timeout: '30s' },
      shutdown: { grace: '1s' },
    })
    proxy = await spawnProxy(file)
    admin = ['--admin', proxy.admin]
  })
  afterAll(async () => {
    await proxy?.stop()
    await blue?.close()
    await dir?.remove()
  })

  it('status names the upstream that is down and why', async () => {
    const status = await eventually(
      async () => {
        const result = await runCli(['status', ...admin])
        return result.stdout.includes('green 0/1') ? result : undefined
      },
      { message: 'green found down' },
    )
    expect(status.code, status.stderr).toBe(0)
    expect(status.stdout).toMatch(
      /^upstreams {3}blue {2}1\/1 available, open: 0 request\(s\), 0 websocket\(s\)$/m,
    )
    expect(status.stdout).toMatch(
      new RegExp(
        `^ {12}green 0/1 available, open: .*; ${down} failing health checks \\(.*ECONNREFUSED.*\\)$`,
        'm',
      ),
    )
    expect(status.stdout).toMatch(/^watching {4}nothing$/m)
  })

  it('a switch refused for the health of its target says --force, not the API field', async () => {
    const refused = await runCli(['switch', 'green', ...admin, '--token', token])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/; use --force to send it traffic anyway \(BG_TARGET_UNHEALTHY\)\n$/)
    expect(refused.stderr).not.toContain('"force"')
  })

  it('after a forced switch, status shows what is watched and the drain of the old color', async () => {
    const forced = await runCli([
      'switch',
      'green',
      '--force',
      '--reason',
      'forced',
      ...admin,
      '--token',
      token,
    ])
    expect(forced.code, forced.stderr).toBe(0)
    const status = await eventually(
      async () => {
        const result = await runCli(['status', ...admin])
        return result.stdout.includes('drained at') ? result.stdout : undefined
      },
      { message: 'blue drained' },
    )
    expect(status).toMatch(/^watching {4}green \(generation 1\) for a rollback until \d{4}-\S+Z$/m)
    expect(status).toMatch(
      /^drain {7}blue since \S+Z, drained at \S+Z on this replica \(safe to scale down when the standby says so\)$/m,
    )
  })

  it('events --follow prints what is there, then each new event as it comes', async () => {
    const follow = streamCli(['events', '--follow', '--interval', '0.1', ...admin])
    try {
      await eventually(() => follow.output().includes('forced'), { message: 'the forced switch listed' })
      expect(follow.output()).toMatch(/^time +actor +action +to +result +reason\n/)
      const rollout = await runCli([
        'rollout',
        'blue',
        '--steps',
        '50,100',
        '--step-seconds',
        '600',
        '--reason',
        'step by step',
        ...admin,
        '--token',
        token,
      ])
      expect(rollout.code, rollout.stderr).toBe(0)
      await eventually(() => follow.output().includes('step by step'), { message: 'the rollout followed' })
      const lines = follow.output().trimEnd().split('\n')
      // The header once, the old events, then the new one last: oldest first, as a log reads.
      expect(lines.filter((line) => line.startsWith('time '))).toHaveLength(1)
      expect(lines.at(-1)).toMatch(/ rollout .*step by step$/)
      expect(lines.filter((line) => line.includes('forced'))).toHaveLength(1)
    } finally {
      follow.stop()
    }
  })

  it("status shows the running rollout's step and its figures", async () => {
    const status = await eventually(
      async () => {
        const result = await runCli(['status', ...admin])
        return /until \S+Z: /.test(result.stdout) ? result.stdout : undefined
      },
      { message: 'the step judged' },
    )
    expect(status).toMatch(/^rollout {5}running, step 1\/2 \(50% to blue\), until \S+Z: .*\S$/m)
  })

  it('status --watch redraws every --interval until it is stopped', async () => {
    const watch = streamCli(['status', '--watch', '--interval', '0.1', ...admin])
    try {
      const frames = await eventually(
        () => {
          const found = watch
            .output()
            .split(/^\d{4}-\d\d-\d\dT\S+Z\n/m)
            .slice(1)
          return found.length >= 3 ? found : undefined
        },
        { message: 'three frames' },
      )
      for (const frame of frames.slice(0, 2)) {
        expect(frame).toMatch(/^active {6}green\nweights {5}blue 50 \/ green 50\n/)
        expect(frame).toMatch(/^replica {5}\S+ applied \d+\n\n$/m)
      }
    } finally {
      watch.stop()
    }
  })
})

describe('status --watch through an admin API restart', () => {
  it('says once that the admin API is unreachable, and goes on when it is back', async () => {
    // A stand-in admin API on a port it can give up and take again, with the mark and a state.
    const state = {
      active: 'blue',
      weights: { blue: 100, green: 0 },
      generation: 4,
      updatedAt: '2026-01-01T00:00:00.000Z',
      updatedBy: 'test',
      reason: 'stand-in',
    }
    const answer = (_req: unknown, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-bluegreen-admin': '1' })
      res.end(JSON.stringify(state))
    }
    let server = await startServer(answer)
    const { port } = server
    const watch = streamCli(['status', '--watch', '--interval', '0.1', '--admin', server.url])
    try {
      await eventually(() => watch.output().includes('generation  4'), { message: 'a first frame' })
      await server.close()
      await eventually(() => watch.output().includes('ECONNREFUSED'), { message: 'the outage said' })
      server = await startServer(answer, port)
      await eventually(() => watch.output().includes('the admin API answers again'), {
        message: 'the return',
      })
      const output = watch.output()
      expect(output.match(/ECONNREFUSED/g)).toHaveLength(1)
      expect(output).toMatch(
        /Z cannot reach the admin API at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\) \(BG_ADMIN_UNREACHABLE\); trying again\n/,
      )
      expect(output).not.toMatch(/\n\s+at /)
    } finally {
      watch.stop()
      await server.close()
    }
  })
})
