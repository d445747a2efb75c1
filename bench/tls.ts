// Question: what do TLS and HTTP/2 to clients cost bluegreen-proxy, next to nginx (one worker) and Caddy with the
// same certificate (EC P-256) and the same fast upstream? HTTP/1.1 over TLS with wrk (keep-alive: the handshakes
// are a warm-up cost, the steady state is record encryption and parsing), and HTTP/2 with h2load (few
// connections, many concurrent streams each). Requests/s and the server's CPU per request, alternated rounds,
// medians and the median of each round's ratio. On a loaded machine only the ratios mean much.
import type { ChildProcess } from 'node:child_process'
import {
  type BenchCertificate,
  type CpuSample,
  freePort,
  h2loadLoad,
  hasCommand,
  LOAD_CORE,
  type LoadResult,
  loadWithCpu,
  makeBenchCertificate,
  median,
  medianOfRounds,
  PROXY_CORE,
  pin,
  pinLoadGenerator,
  processTree,
  startBluegreen,
  startCaddyProxy,
  startFastUpstream,
  startNginxProxy,
  stopProcess,
  table,
  unpinLoadGenerator,
  writeResult,
  wrkLoad,
} from './lib.ts'

const ROUNDS = Number(process.env.BENCH_TLS_ROUNDS ?? process.env.BENCH_ROUNDS ?? 3)
const SECONDS = Number(process.env.BENCH_TLS_SECONDS ?? 3)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
/** HTTP/2: this many connections, each with H2_STREAMS streams in flight. */
const H2_CONNECTIONS = Number(process.env.BENCH_H2_CONNECTIONS ?? 10)
const H2_STREAMS = Number(process.env.BENCH_H2_STREAMS ?? 10)

interface Contender {
  name: string
  url: string
  child: ChildProcess
  pids: number[]
}

export async function tlsBench(): Promise<Record<string, unknown>> {
  const tools: { name: string; load: (url: string, seconds?: number) => Promise<LoadResult> }[] = []
  if (await hasCommand('wrk'))
    tools.push({
      name: 'wrk (HTTP/1.1 over TLS)',
      load: (url, seconds = SECONDS) => wrkLoad(url, seconds, CONNECTIONS),
    })
  if (await hasCommand('h2load'))
    tools.push({
      name: `h2load (HTTP/2, ${H2_CONNECTIONS}x${H2_STREAMS} streams)`,
      load: (url, seconds = SECONDS) => h2loadLoad(url, seconds, H2_CONNECTIONS, H2_STREAMS),
    })
  if (tools.length === 0 || !(await hasCommand('openssl'))) {
    console.log('skipped: the TLS bench needs openssl, and wrk or h2load (nghttp2-client)')
    return {}
  }
  const certificate: BenchCertificate = await makeBenchCertificate()
  const placement = await pinLoadGenerator()
  const upstreamPort = await freePort()
  const upstream = await startFastUpstream(upstreamPort)
  await pin(upstream.child.pid, LOAD_CORE)
  const direct = `http://127.0.0.1:${upstreamPort}`
  const contenders: Contender[] = []
  const add = async (name: string, start: (port: number) => Promise<ChildProcess>) => {
    const port = await freePort()
    const child = await start(port)
    await pin(child.pid, PROXY_CORE)
    contenders.push({ name, url: `https://127.0.0.1:${port}/`, child, pids: await processTree(child.pid!) })
  }
  const samples: Record<string, Record<string, CpuSample[]>> = {}
  try {
    await add('bluegreen', async (port) => {
      const proxy = await startBluegreen(port, {
        admin: { listen: `127.0.0.1:${await freePort()}` },
        tls: certificate,
        pools: { blue: { upstreams: [direct] }, green: { upstreams: [direct] } },
      })
      return proxy.child
    })
    if (await hasCommand('nginx'))
      await add('nginx', (port) => startNginxProxy(port, `127.0.0.1:${upstreamPort}`, certificate))
    else console.log('skipped: nginx not on PATH')
    if (await hasCommand('caddy'))
      await add('caddy', (port) => startCaddyProxy(port, `127.0.0.1:${upstreamPort}`, certificate))
    else console.log('skipped: caddy not on PATH')

    for (const tool of tools) {
      const byContender: Record<string, CpuSample[]> = {}
      samples[tool.name] = byContender
      for (const contender of contenders) await tool.load(contender.url, 1)
      for (let round = 0; round < ROUNDS; round++) {
        for (const contender of contenders) {
          const list = byContender[contender.name] ?? []
          list.push(await loadWithCpu(contender.pids, SECONDS, () => tool.load(contender.url)))
          byContender[contender.name] = list
        }
      }
    }
  } finally {
    await unpinLoadGenerator()
    for (const contender of contenders.reverse()) await stopProcess(contender.child)
    await stopProcess(upstream.child)
  }

  const rows: Record<string, string | number>[] = []
  for (const tool of tools) {
    const byContender = samples[tool.name]!
    const ours = byContender.bluegreen!
    for (const [name, list] of Object.entries(byContender)) {
      const ratio = (of: (o: CpuSample, t: CpuSample) => number) =>
        name === 'bluegreen' ? '' : Number(medianOfRounds(ours, list, of).toFixed(2))
      rows.push({
        load: tool.name,
        target: name,
        'req/s (median)': Math.round(median(list.map((s) => s.requestsPerSecond))),
        'CPU µs/req': Number(median(list.map((s) => s.cpuMicrosPerRequest)).toFixed(1)),
        errors: list.reduce((sum, s) => sum + s.errors + s.non2xx, 0),
        'req/s, ours / theirs': ratio((o, t) => o.requestsPerSecond / t.requestsPerSecond),
        'CPU/req, theirs / ours': ratio((o, t) => t.cpuMicrosPerRequest / o.cpuMicrosPerRequest),
      })
    }
  }
  console.log(
    `\ntls: ${ROUNDS} alternated rounds of ${SECONDS}s per load generator; wrk ${CONNECTIONS} connections, ` +
      `h2load ${H2_CONNECTIONS} connections x ${H2_STREAMS} streams; EC P-256 certificate; ` +
      `13-byte responses from ${upstream.kind}.\n${placement}.\n`,
  )
  console.log(table(rows))
  const result = { rounds: ROUNDS, seconds: SECONDS, upstream: upstream.kind, placement, rows, samples }
  console.log(`\nwritten to ${await writeResult('tls', result)}`)
  return result
}

if (import.meta.main) {
  await tlsBench()
  process.exit(0)
}
