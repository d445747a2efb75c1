import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
} from 'node:http'
import { createServer as createHttpsServer, type ServerOptions } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll } from 'vitest'
import { type App, startApp } from '../../src/app.ts'
import { buildConfig } from '../../src/config/schema.ts'
import { type Logger, silentLogger } from '../../src/log.ts'
import { eventually } from './eventually.ts'

export const REPO = new URL('../..', import.meta.url).pathname
export const CLI = join(REPO, 'src/cli.ts')

/** A real HTTP server on a free loopback port, with every socket tracked so close() never hangs. */
export interface TestServer {
  server: Server
  url: string
  port: number
  close(): Promise<void>
}

/** `port`: to take a port again that a closed server gave up (a restart); 0, a free one. */
export async function startServer(handler: RequestListener, port = 0): Promise<TestServer> {
  const server = createServer(handler)
  const sockets = new Set<Socket>()
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  server.listen(port, '127.0.0.1')
  await once(server, 'listening')
  const bound = (server.address() as AddressInfo).port
  return {
    server,
    port: bound,
    url: `http://127.0.0.1:${bound}`,
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

/** startServer over TLS: `tls` holds the certificate and key, and for mTLS the CA clients must be signed by. */
export async function startHttpsServer(handler: RequestListener, tls: ServerOptions): Promise<TestServer> {
  const server = createHttpsServer(tls, handler)
  const sockets = new Set<{ destroy(): void; once(event: 'close', listener: () => void): void }>()
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  server.on('tlsClientError', () => {})
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const bound = (server.address() as AddressInfo).port
  return {
    server,
    port: bound,
    url: `https://127.0.0.1:${bound}`,
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

/** An upstream that answers with its name and echoes what it received, for routing and header tests. */
export function echoUpstream(name: string): Promise<TestServer> {
  return startServer(echoHandler(name))
}

/** echoUpstream's request handler, for servers of other kinds (TLS, WebSockets) that echo too. */
export function echoHandler(name: string): RequestListener {
  return async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const body = JSON.stringify({
      name,
      method: req.method,
      url: req.url,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      bodyLength: Buffer.concat(chunks).length,
    })
    res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': name })
    res.end(body)
  }
}

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, host, () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/**
 * An upstream address where nothing listens, so a connection is refused. A port freed on 127.0.0.1 can be taken
 * again by a server of another test file running meanwhile, and then it answers (a flake seen in CI: a 503 from
 * someone else's server). 127.0.0.2 is loopback too, and the servers of these tests bind 127.0.0.1; only the
 * few that bind a wildcard address could ever take it.
 */
export async function refusedUrl(): Promise<string> {
  return `http://127.0.0.2:${await freePort('127.0.0.2')}`
}

export async function tempDir(
  prefix = 'bluegreen-test-',
): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix))
  return { path, remove: () => rm(path, { recursive: true, force: true }) }
}

/** The proxy in this process, on free ports, with a state file in its own temp dir. */
export interface TestProxy {
  app: App
  url: string
  admin: string
  stateDir: string
  close(): Promise<void>
}

export async function startProxy(
  pools: { blue: string[]; green: string[] },
  extra: Record<string, unknown> = {},
  logger: Logger = silentLogger(),
): Promise<TestProxy> {
  const dir = await tempDir()
  const { state, ...rest } = extra as { state?: Record<string, unknown> }
  const config = buildConfig(
    {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      pools: { blue: { upstreams: pools.blue }, green: { upstreams: pools.green } },
      state: { path: join(dir.path, 'state.json'), ...state },
      shutdown: { grace: '2s' },
      ...rest,
    },
    {},
  )
  const app = await startApp(config, logger)
  return {
    app,
    url: `http://127.0.0.1:${app.proxyAddress.port}`,
    admin: `http://127.0.0.1:${app.adminAddress.port}`,
    stateDir: dir.path,
    close: async () => {
      await app.close()
      await dir.remove()
    },
  }
}

/** Two echo upstreams, blue and green, and a proxy in this process over them. */
export interface ColorRig {
  blue: TestServer
  green: TestServer
  proxy: TestProxy
}

/**
 * The rig most suites start from, for the enclosing describe block: started in beforeAll (with `extra` config as
 * for startProxy), closed in afterAll. Its fields are there once beforeAll has run.
 */
export function useColorRig(extra: Record<string, unknown> = {}): ColorRig {
  const rig = {} as ColorRig
  beforeAll(async () => {
    rig.blue = await echoUpstream('blue')
    rig.green = await echoUpstream('green')
    rig.proxy = await startProxy({ blue: [rig.blue.url], green: [rig.green.url] }, extra)
  })
  afterAll(async () => {
    await rig.proxy?.close()
    await rig.blue?.close()
    await rig.green?.close()
  })
  return rig
}

/** `bluegreen serve` as a child process, the way operators run it. */
export interface ChildProxy {
  child: ChildProcess
  url: string
  admin: string
  output: () => string
  /** Resolves with the exit code. */
  exited: Promise<number | null>
  stop(signal?: NodeJS.Signals): Promise<number | null>
}

export async function writeConfig(dir: string, config: unknown, name = 'config.json'): Promise<string> {
  const file = join(dir, name)
  await writeFile(file, typeof config === 'string' ? config : JSON.stringify(config, null, 2))
  return file
}

export async function spawnProxy(
  configFile: string,
  env: NodeJS.ProcessEnv = {},
  options: { cwd?: string } = {},
): Promise<ChildProxy> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configFile], {
    env: { ...process.env, ...env },
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout?.on('data', (chunk) => {
    output += chunk
  })
  child.stderr?.on('data', (chunk) => {
    output += chunk
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const started = await eventually(
    () => {
      if (child.exitCode !== null) throw new Error(`the proxy exited with ${child.exitCode}:\n${output}`)
      const line = output.split('\n').find((entry) => entry.includes('bluegreen-proxy started'))
      return line ? (JSON.parse(line) as { proxy: { port: number }; admin: { port: number } }) : undefined
    },
    { timeout: 15_000, message: 'the proxy to start' },
  )
  return {
    child,
    url: `http://127.0.0.1:${started.proxy.port}`,
    admin: `http://127.0.0.1:${started.admin.port}`,
    output: () => output,
    exited,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null) child.kill(signal)
      return exited
    },
  }
}

/** An upstream in a child process of its own (upstream-process.ts), for tests that kill it. */
export interface UpstreamProcess {
  child: ChildProcess
  url: string
  /** Its stdout so far: one JSON line per held request (see upstream-process.ts). */
  output: () => string
  /** SIGKILL, as a crash: no response is finished and every connection closes at once. */
  kill(): Promise<void>
}

export async function spawnUpstream(
  name: string,
  options: { keepAliveTimeout?: number } = {},
): Promise<UpstreamProcess> {
  const program = join(REPO, 'test/helpers/upstream-process.ts')
  const child = spawn(process.execPath, [program, name, String(options.keepAliveTimeout ?? 0)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let output = ''
  child.stdout?.on('data', (chunk) => {
    output += chunk
  })
  const exited = once(child, 'exit')
  const port = await eventually(
    () => {
      if (child.exitCode !== null) throw new Error(`upstream ${name} exited with ${child.exitCode}`)
      const line = output.split('\n').find((entry) => entry.startsWith('{"port"'))
      return line ? (JSON.parse(line) as { port: number }).port : undefined
    },
    { message: `upstream ${name} to listen` },
  )
  return {
    child,
    url: `http://127.0.0.1:${port}`,
    output: () => output,
    kill: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGKILL')
      await exited
    },
  }
}
