// The shared benchmark runner: child processes for every server, autocannon (or wrk) as the load, medians of
// alternated rounds so that drift on a shared 2-core machine hits every contender alike.
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import autocannon from 'autocannon'

export const REPO = new URL('..', import.meta.url).pathname

export interface LoadResult {
  requestsPerSecond: number
  latencyP50Ms: number
  latencyP99Ms: number
  errors: number
  non2xx: number
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resolve(port))
    })
  })
}

export async function waitForHttp(url: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const response = await fetch(url)
      await response.arrayBuffer()
      return
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`${url} did not come up: ${(error as Error).message}`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
}

const children = new Set<ChildProcess>()
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL')
})

export function startProcess(command: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(command, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill('SIGTERM')
  await once(child, 'exit')
}

/** A fast upstream in its own process: a fixed small body, so it is not what is being measured. */
export async function startUpstream(port: number): Promise<ChildProcess> {
  const child = startProcess(process.execPath, [join(REPO, 'bench/upstream.ts'), String(port)])
  await waitForHttp(`http://127.0.0.1:${port}/`)
  return child
}

/** `bluegreen serve` in its own process, as users run it. */
export async function startBluegreen(
  port: number,
  config: Record<string, unknown>,
): Promise<{ child: ChildProcess; url: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'bluegreen-bench-'))
  const file = join(dir, 'config.json')
  await writeFile(
    file,
    JSON.stringify({ listen: `127.0.0.1:${port}`, state: { path: join(dir, 'state.json') }, ...config }),
  )
  const child = startProcess(process.execPath, [join(REPO, 'src/cli.ts'), 'serve', '--config', file])
  const url = `http://127.0.0.1:${port}`
  await waitForHttp(`${url}/`)
  return { child, url }
}

export async function autocannonLoad(url: string, seconds: number, connections: number): Promise<LoadResult> {
  const result = await autocannon({ url, connections, duration: seconds, pipelining: 1 })
  return {
    requestsPerSecond: result.requests.average,
    latencyP50Ms: result.latency.p50,
    latencyP99Ms: result.latency.p99,
    errors: result.errors,
    non2xx: result.non2xx,
  }
}

const run = promisify(execFile)

export async function hasCommand(name: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${name}`])
    return true
  } catch {
    return false
  }
}

/** wrk, where installed: it is not CPU-bound the way autocannon is, so ratios against fast servers are fairer. */
export async function wrkLoad(url: string, seconds: number, connections: number): Promise<LoadResult> {
  const { stdout } = await run('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', url])
  const rps = Number(stdout.match(/Requests\/sec:\s+([\d.]+)/)?.[1] ?? Number.NaN)
  const toMs = (text: string | undefined): number => {
    const match = text?.match(/([\d.]+)(us|ms|s)/)
    if (!match) return Number.NaN
    const value = Number(match[1])
    return match[2] === 'us' ? value / 1000 : match[2] === 's' ? value * 1000 : value
  }
  const errors = stdout.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/)
  const non2xx = Number(stdout.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0)
  return {
    requestsPerSecond: rps,
    latencyP50Ms: toMs(stdout.match(/50%\s+(\S+)/)?.[1]),
    latencyP99Ms: toMs(stdout.match(/99%\s+(\S+)/)?.[1]),
    errors: errors ? errors.slice(1).reduce((sum, value) => sum + Number(value), 0) : 0,
    non2xx,
  }
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

export function table(rows: Record<string, string | number>[]): string {
  const columns = Object.keys(rows[0] ?? {})
  const cell = (value: string | number) =>
    typeof value === 'number' ? value.toLocaleString('en-US', { maximumFractionDigits: 2 }) : value
  const widths = columns.map((column) =>
    Math.max(column.length, ...rows.map((row) => String(cell(row[column] ?? '')).length)),
  )
  const line = (values: string[]) => `| ${values.map((value, i) => value.padEnd(widths[i]!)).join(' | ')} |`
  return [
    line(columns),
    line(widths.map((width) => '-'.repeat(width))),
    ...rows.map((row) => line(columns.map((column) => String(cell(row[column] ?? ''))))),
  ].join('\n')
}

export async function writeResult(name: string, value: unknown): Promise<string> {
  const { mkdir } = await import('node:fs/promises')
  const dir = join(REPO, 'bench/results')
  await mkdir(dir, { recursive: true })
  const file = join(dir, `${name}.json`)
  await writeFile(file, JSON.stringify(value, null, 2))
  return file
}
