import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { accessSync, constants } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { createConnection } from 'node:net'
import { delimiter, join } from 'node:path'
import { eventually } from './eventually.ts'
import { freePort, tempDir } from './servers.ts'

/** A real redis-server (or redis-sentinel) of the test's own, on a free loopback port, that it can stop and pause. */
export interface RedisProcess {
  port: number
  url: string
  /** Everything the process printed, for a failing test's message. */
  output(): string
  /** SIGKILL: gone at once, as in a crash. */
  kill(): Promise<void>
  /** SIGSTOP: the socket stays open and nothing answers. */
  pause(): void
  /** SIGCONT. */
  resume(): void
  /** Starts it again on the same port (empty: these servers keep nothing on disk). */
  restart(): Promise<void>
  stop(): Promise<void>
}

/**
 * Whether an executable of that name is on PATH. redis-sentinel comes in its own Debian package, apart from
 * redis-server: a test that needs it skips, naming what to install, instead of failing with ENOENT.
 */
export function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, command), constants.X_OK)
      return true
    } catch {
      return false
    }
  })
}

/** Answers whether something on the port replies +PONG to a PING. */
export function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: '127.0.0.1' })
    const done = (result: boolean) => {
      socket.destroy()
      resolve(result)
    }
    socket.setTimeout(500, () => done(false))
    socket.once('error', () => done(false))
    socket.once('connect', () => socket.write('PING\r\n'))
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')))
  })
}

async function launch(
  command: string,
  args: string[],
  port: number,
): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (chunk) => {
    output += chunk
  })
  child.stderr?.on('data', (chunk) => {
    output += chunk
  })
  await eventually(
    async () => {
      if (child.exitCode !== null) throw new Error(`${command} exited with ${child.exitCode}: ${output}`)
      return ping(port)
    },
    { timeout: 10_000, interval: 20, message: `${command} on port ${port}` },
  )
  return { child, output: () => output }
}

function control(port: number, start: () => Promise<{ child: ChildProcess; output: () => string }>) {
  return async (): Promise<RedisProcess> => {
    let current = await start()
    const kill = async () => {
      const { child } = current
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGCONT')
      child.kill('SIGKILL')
      await once(child, 'exit')
    }
    return {
      port,
      url: `redis://127.0.0.1:${port}`,
      output: () => current.output(),
      kill,
      pause: () => current.child.kill('SIGSTOP'),
      resume: () => current.child.kill('SIGCONT'),
      restart: async () => {
        await kill()
        current = await start()
      },
      stop: kill,
    }
  }
}

export async function startRedis(options: { port?: number; args?: string[] } = {}): Promise<RedisProcess> {
  const port = options.port ?? (await freePort())
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--protected-mode',
    'no',
    ...(options.args ?? []),
  ]
  return control(port, () => launch('redis-server', args, port))()
}

/** A Sentinel watching the master at masterPort under `name`, with fast failure detection for tests. */
export async function startSentinel(masterPort: number, name: string, quorum = 1): Promise<RedisProcess> {
  const port = await freePort()
  const dir = await tempDir('bluegreen-sentinel-')
  const file = join(dir.path, 'sentinel.conf')
  await writeFile(
    file,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      'protected-mode no',
      `dir ${dir.path}`,
      `sentinel monitor ${name} 127.0.0.1 ${masterPort} ${quorum}`,
      `sentinel down-after-milliseconds ${name} 500`,
      `sentinel failover-timeout ${name} 3000`,
      `sentinel parallel-syncs ${name} 1`,
      '',
    ].join('\n'),
  )
  const sentinel = await control(port, () => launch('redis-sentinel', [file], port))()
  return {
    ...sentinel,
    stop: async () => {
      await sentinel.stop()
      await dir.remove()
    },
  }
}
