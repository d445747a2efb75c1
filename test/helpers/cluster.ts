import { type ChildProcess, spawn } from 'node:child_process'
import { type IncomingMessage, request } from 'node:http'
import { eventually } from './eventually.ts'
import { CLI } from './servers.ts'

// `bluegreen serve --workers N` as a child process, and requests on connections of their own so that the primary
// deals them out to every worker.

export interface Answer {
  status: number
  headers: IncomingMessage['headers']
  body: string
}

/** One request on a connection of its own (no keep-alive agent), so each may land on another worker. */
export function fresh(url: string, method = 'GET', body?: unknown): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method, agent: false, headers: body === undefined ? {} : { 'content-type': 'application/json' } },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (chunk) => {
          text += chunk
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
        res.on('error', reject)
      },
    )
    req.setTimeout(5_000, () => req.destroy(new Error(`${method} ${url} timed out`)))
    req.on('error', reject)
    req.end(body === undefined ? undefined : JSON.stringify(body))
  })
}

export interface Cluster {
  child: ChildProcess
  url: string
  admin: string
  output(): string
  /** Log lines as objects, stdout only. */
  lines(): Record<string, unknown>[]
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

export async function spawnCluster(configFile: string, workers: number): Promise<Cluster> {
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--config', configFile, '--workers', String(workers)],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (chunk) => {
    stdout += chunk
  })
  child.stderr?.on('data', (chunk) => {
    stderr += chunk
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  )
  const lines = () =>
    stdout
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
  const started = await eventually(
    () => {
      if (child.exitCode !== null)
        throw new Error(`the primary exited with ${child.exitCode}:\n${stdout}${stderr}`)
      const serving = lines().filter((line) => line.msg === 'worker serving')
      const up = lines().find((line) => line.msg === 'bluegreen-proxy started')
      return serving.length >= workers && (up as { proxy: { port: number }; admin: { port: number } })
    },
    { timeout: 20_000, message: `${workers} workers to start` },
  )
  return {
    child,
    url: `http://127.0.0.1:${started.proxy.port}`,
    admin: `http://127.0.0.1:${started.admin.port}`,
    output: () => stdout + stderr,
    lines,
    exited,
  }
}
