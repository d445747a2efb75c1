// The shared benchmark runner: child processes for every server, autocannon (or wrk) as the load, medians of
// alternated rounds so that drift on a shared 2-core machine hits every contender alike.
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { cpus, tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
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

/** A child process for the bench; stderr passes through, but for lines matching `quiet`. */
export function startProcess(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  quiet?: RegExp,
): ChildProcess {
  const child = spawn(command, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', quiet ? 'pipe' : 'inherit'],
  })
  if (quiet) {
    createInterface({ input: child.stderr! }).on('line', (line) => {
      if (!quiet.test(line)) process.stderr.write(`${line}\n`)
    })
  }
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

/**
 * `bluegreen serve` in its own process, as users run it. With `openFiles`, it starts through a shell that first
 * raises its open-file limit (`ulimit -n`) that far, where the hard limit allows; `nodeArguments` go to node
 * before the script, `serveArguments` after `serve --config FILE`, stderr lines matching `quiet` are dropped, and
 * `root` runs another checkout's sources.
 */
export async function startBluegreen(
  port: number,
  config: Record<string, unknown>,
  options: {
    openFiles?: number
    nodeArguments?: string[]
    quiet?: RegExp
    root?: string
    serveArguments?: string[]
  } = {},
): Promise<{ child: ChildProcess; url: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'bluegreen-bench-'))
  const file = join(dir, 'config.json')
  await writeFile(
    file,
    JSON.stringify({ listen: `127.0.0.1:${port}`, state: { path: join(dir, 'state.json') }, ...config }),
  )
  const args = [
    ...(options.nodeArguments ?? []),
    join(options.root ?? REPO, 'src/cli.ts'),
    'serve',
    '--config',
    file,
    ...(options.serveArguments ?? []),
  ]
  const child =
    options.openFiles === undefined
      ? startProcess(process.execPath, args, {}, options.quiet)
      : startProcess(
          'sh',
          ['-c', `ulimit -n ${options.openFiles} 2>/dev/null; exec "$0" "$@"`, process.execPath, ...args],
          {},
          options.quiet,
        )
  if (config.tls) {
    await waitForTls(port)
    return { child, url: `https://127.0.0.1:${port}` }
  }
  const url = `http://127.0.0.1:${port}`
  await waitForHttp(`${url}/`)
  return { child, url }
}

/** Open loop with `connections`, or paced to `rate` requests/s overall when given. */
export async function autocannonLoad(
  url: string,
  seconds: number,
  connections: number,
  rate?: number,
): Promise<LoadResult> {
  const result = await autocannon({
    url,
    connections,
    duration: seconds,
    pipelining: 1,
    ...(rate === undefined ? {} : { overallRate: rate }),
  })
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
export async function wrkLoad(
  url: string,
  seconds: number,
  connections: number,
  script?: string,
): Promise<LoadResult> {
  const args = [
    '-t1',
    `-c${connections}`,
    `-d${seconds}s`,
    '--latency',
    ...(script ? ['-s', script] : []),
    url,
  ]
  const { stdout } = await run('wrk', args, { timeout: (seconds + 30) * 1000 })
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
    // Anchored to the start of a line: the "+/- Stdev" column above can also end in "50%" or "99%".
    latencyP50Ms: toMs(stdout.match(/^\s*50%\s+(\S+)/m)?.[1]),
    latencyP99Ms: toMs(stdout.match(/^\s*99%\s+(\S+)/m)?.[1]),
    errors: errors ? errors.slice(1).reduce((sum, value) => sum + Number(value), 0) : 0,
    non2xx,
  }
}

/**
 * Where `taskset` is on PATH (and BENCH_PIN is not 0), each side of a measurement gets a core of its own: the
 * server under test core 1, the load generator and the upstream core 0. Unpinned, the three contend for both
 * cores and the scheduler's choices swing a round by 25%; pinned, a Node proxy and nginx's one worker are compared
 * per core, as the targets are stated. Every thread of the process and of its children is moved.
 */
export const PROXY_CORE = 1
export const LOAD_CORE = 0

let pinning: Promise<boolean> | undefined
export function pinningAvailable(): Promise<boolean> {
  pinning ??=
    process.env.BENCH_PIN === '0' || cpus().length < 2 ? Promise.resolve(false) : hasCommand('taskset')
  return pinning
}

export async function pin(pid: number | undefined, core: number): Promise<void> {
  if (pid === undefined || !(await pinningAvailable())) return
  for (const each of await processTree(pid)) {
    await run('taskset', ['-a', '-p', '-c', String(core), String(each)])
  }
}

/** A process and its children (nginx's master and worker), by pid. */
export async function processTree(pid: number): Promise<number[]> {
  const { stdout } = await run('sh', ['-c', `pgrep -P ${pid} || true`])
  return [pid, ...stdout.split('\n').filter(Boolean).map(Number)]
}

/**
 * CPU time (user + system) the processes have used so far, in microseconds, from /proc (Linux; NaN elsewhere).
 * Over a round, divided by the requests served, it gives the CPU a request costs: steadier than req/s on a
 * shared machine, since time spent waiting for a core does not count.
 */
export async function cpuMicros(pids: readonly number[]): Promise<number> {
  let ticks = 0
  for (const pid of pids) {
    try {
      const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ')
      ticks += Number(fields[11]) + Number(fields[12])
    } catch {
      return Number.NaN
    }
  }
  // Kernel clock ticks: 100 a second on every Linux that Node supports (USER_HZ).
  return ticks * 10_000
}

/** A round's load figures and the CPU time the server spent on each of its requests meanwhile. */
export type CpuSample = LoadResult & { cpuMicrosPerRequest: number }

/** One round of `load`, lasting `seconds`, with the CPU time the processes `pids` spent on it per request. */
export async function loadWithCpu(
  pids: readonly number[],
  seconds: number,
  load: () => Promise<LoadResult>,
): Promise<CpuSample> {
  const before = await cpuMicros(pids)
  const result = await load()
  const used = (await cpuMicros(pids)) - before
  return { ...result, cpuMicrosPerRequest: used / (result.requestsPerSecond * seconds) }
}

/**
 * The median over rounds of `of(ours[round], theirs[round])`: the two of a round ran seconds apart, so drift in
 * what else the machine is doing cancels out better than in a ratio of medians.
 */
export function medianOfRounds<T>(
  ours: readonly T[],
  theirs: readonly T[],
  of: (ours: T, theirs: T) => number,
): number {
  return median(ours.map((sample, round) => of(sample, theirs[round]!)))
}

/**
 * Pins this process (autocannon runs in it, and wrk is its child) to the load generator's core. Every process it
 * starts afterwards inherits that, so a bench that pins calls unpinLoadGenerator when it is done: the benches that
 * follow it in `npm run bench` must not find their servers squeezed onto one core.
 */
export async function pinLoadGenerator(): Promise<string> {
  if (!(await pinningAvailable()))
    return 'unpinned: the load generator, the proxy and the upstream share both cores'
  await pin(process.pid, LOAD_CORE)
  return `pinned: the server under test on core ${PROXY_CORE}, the load generator and the upstream on core ${LOAD_CORE}`
}

export async function unpinLoadGenerator(): Promise<void> {
  if (!(await pinningAvailable())) return
  await run('taskset', ['-a', '-p', '-c', `0-${cpus().length - 1}`, String(process.pid)])
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

/**
 * nginx in the foreground as the current user, everything (config, pid, logs, temp files) in a fresh temp dir,
 * one worker: `http` is the body of the http {} block.
 */
export async function startNginx(http: string, port: number): Promise<ChildProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'bluegreen-bench-nginx-'))
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((name) => `  ${name}_temp_path ${join(dir, name)};`)
    .join('\n')
  // As root, nginx would hand its worker to "nobody", which cannot write into the 0700 temp dir.
  const user = process.getuid?.() === 0 ? `user ${userInfo().username};\n` : ''
  const conf = `${user}worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 16384; }
http {
  access_log off;
${temp}
  keepalive_timeout 65s;
  keepalive_requests 1000000;
${http}
}
`
  await writeFile(join(dir, 'nginx.conf'), conf)
  const child = startProcess('nginx', [
    '-p',
    dir,
    '-e',
    join(dir, 'error.log'),
    '-c',
    join(dir, 'nginx.conf'),
    '-g',
    'daemon off;',
  ])
  if (/\bssl\b/.test(http)) await waitForTls(port)
  else await waitForHttp(`http://127.0.0.1:${port}/`)
  return child
}

export const BODY = 'hello, world\n'

/**
 * The fastest upstream at hand: nginx answering `return 200` with one worker when installed (so the upstream is
 * not what limits a proxy), else bench/upstream.ts. The same 13-byte body either way.
 */
export async function startFastUpstream(port: number): Promise<{ child: ChildProcess; kind: string }> {
  if (!(await hasCommand('nginx'))) {
    console.log('skipped: nginx not on PATH (the upstream is bench/upstream.ts instead)')
    return { child: await startUpstream(port), kind: 'node (bench/upstream.ts)' }
  }
  const server = `  server {
    listen 127.0.0.1:${port};
    location / { default_type text/plain; return 200 ${JSON.stringify(BODY)}; }
  }`
  return { child: await startNginx(server, port), kind: 'nginx return 200, 1 worker' }
}

/** A certificate and key (PEM files) for the servers under test to share. */
export interface BenchCertificate {
  cert: string
  key: string
}

/** A self-signed EC P-256 certificate for 127.0.0.1 and localhost (openssl), in a fresh temp dir. */
export async function makeBenchCertificate(): Promise<BenchCertificate> {
  const dir = await mkdtemp(join(tmpdir(), 'bluegreen-bench-cert-'))
  const cert = join(dir, 'cert.pem')
  const key = join(dir, 'key.pem')
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '2',
    '-subj',
    '/CN=localhost',
    '-addext',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ])
  return { cert, key }
}

/** Waits until a TLS handshake with 127.0.0.1:port succeeds (the certificate is not checked). */
export async function waitForTls(port: number, timeoutMs = 10_000): Promise<void> {
  const { connect } = await import('node:tls')
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const connected = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
        socket.destroy()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (connected) return
    if (Date.now() > deadline) throw new Error(`127.0.0.1:${port} did not come up with TLS`)
    await sleep(50)
  }
}

/**
 * Caddy (a Go proxy, as Traefik is) as a reverse proxy to `upstream`, from a Caddyfile written now: admin API and
 * automatic HTTPS off, no access log; with `tls`, HTTPS (h2 and HTTP/1.1) with that certificate.
 */
export async function startCaddyProxy(
  port: number,
  upstream: string,
  tls?: BenchCertificate,
): Promise<ChildProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'bluegreen-bench-caddy-'))
  const site = tls
    ? `https://127.0.0.1:${port} {\n  tls ${tls.cert} ${tls.key}\n  reverse_proxy ${upstream}\n}`
    : `http://127.0.0.1:${port} {\n  reverse_proxy ${upstream}\n}`
  const caddyfile = `{\n  admin off\n  auto_https off\n}\n${site}\n`
  await writeFile(join(dir, 'Caddyfile'), caddyfile)
  const child = startProcess(
    'caddy',
    ['run', '--config', join(dir, 'Caddyfile'), '--adapter', 'caddyfile'],
    { XDG_DATA_HOME: dir, XDG_CONFIG_HOME: dir, HOME: dir },
    /"level":"(info|warn)"/,
  )
  if (tls) await waitForTls(port)
  else await waitForHttp(`http://127.0.0.1:${port}/`)
  return child
}

/** h2load: HTTP/2 load with `connections` connections of `streams` concurrent streams each. */
export async function h2loadLoad(
  url: string,
  seconds: number,
  connections: number,
  streams: number,
): Promise<LoadResult> {
  const args = ['-t1', `-c${connections}`, `-m${streams}`, `-D${seconds}`, url]
  const { stdout } = await run('h2load', args, { timeout: (seconds + 30) * 1000 })
  const rps = Number(stdout.match(/finished in [\d.]+\w+, ([\d.]+) req\/s/)?.[1] ?? Number.NaN)
  const requests = stdout.match(
    /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/,
  )
  const status = stdout.match(/status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/)
  const toMs = (text: string | undefined): number => {
    const match = text?.match(/([\d.]+)(us|ms|s)/)
    if (!match) return Number.NaN
    const value = Number(match[1])
    return match[2] === 'us' ? value / 1000 : match[2] === 's' ? value * 1000 : value
  }
  // h2load gives min, max, mean and sd of request times, no percentiles: the mean stands in for p50.
  const times = stdout.match(/time for request:\s+(\S+)\s+(\S+)\s+(\S+)/)
  return {
    requestsPerSecond: rps,
    latencyP50Ms: toMs(times?.[3]),
    latencyP99Ms: toMs(times?.[2]),
    errors: requests ? Number(requests[5]) + Number(requests[6]) : Number.NaN,
    non2xx: status ? Number(status[2]) + Number(status[3]) + Number(status[4]) : 0,
  }
}

/**
 * nginx as a reverse proxy to `upstream` ("127.0.0.1:PORT"), one worker, a keep-alive upstream pool; with `tls`,
 * HTTPS with that certificate, h2 and HTTP/1.1 (ALPN).
 */
export function startNginxProxy(
  port: number,
  upstream: string,
  tls?: BenchCertificate,
): Promise<ChildProcess> {
  // "listen ... http2": the nginx of Debian 12 (1.22) predates "http2 on".
  const listen = tls
    ? `listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${tls.cert};
    ssl_certificate_key ${tls.key};
    ssl_protocols TLSv1.2 TLSv1.3;`
    : `listen 127.0.0.1:${port};`
  const http = `  upstream backend {
    server ${upstream};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    ${listen}
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }
  }`
  return startNginx(http, port)
}

/** The resident set of a process, from /proc (Linux), in MiB. */
export async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kib = Number(status.match(/^VmRSS:\s+(\d+) kB/m)?.[1] ?? Number.NaN)
  return kib / 1024
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** The p-th percentile (0..100) of an ascending list. */
export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.max(0, Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1))]!
}

/** Two upstreams answering their color (bench/toggle-upstream.ts: POST /__fail and /__heal) behind a proxy. */
export interface ColorRig {
  bluePort: number
  greenPort: number
  proxyPort: number
  admin: string
  proxy: { child: ChildProcess; url: string }
  stop(): Promise<void>
}

export async function startColorRig(config: Record<string, unknown> = {}): Promise<ColorRig> {
  const [bluePort, greenPort, proxyPort, adminPort] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ])
  const upstream = (port: number, color: string) =>
    startProcess(process.execPath, [join(REPO, 'bench/toggle-upstream.ts'), String(port), color])
  const blue = upstream(bluePort, 'blue')
  const green = upstream(greenPort, 'green')
  await Promise.all([
    waitForHttp(`http://127.0.0.1:${bluePort}/`),
    waitForHttp(`http://127.0.0.1:${greenPort}/`),
  ])
  const proxy = await startBluegreen(proxyPort, {
    admin: { listen: `127.0.0.1:${adminPort}` },
    pools: {
      blue: { upstreams: [`http://127.0.0.1:${bluePort}`] },
      green: { upstreams: [`http://127.0.0.1:${greenPort}`] },
    },
    ...config,
  })
  return {
    bluePort,
    greenPort,
    proxyPort,
    admin: `http://127.0.0.1:${adminPort}`,
    proxy,
    stop: async () => {
      await stopProcess(proxy.child)
      await Promise.all([stopProcess(blue), stopProcess(green)])
    },
  }
}
