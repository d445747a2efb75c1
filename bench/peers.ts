// Question: how does bluegreen-proxy (every feature at its default: metrics on, default logging) compare with the
// proxies people would otherwise run? The upstream directly (the ceiling), bluegreen, a minimal http-proxy-3 proxy,
// @fastify/http-proxy, nginx (one worker: a per-core comparison), Caddy (a Go proxy, as Traefik is; its TLS and
// HTTP/2 figures are in bench/tls.ts) and the floor of bluegreen's own stack (node:http into an undici Pool,
// nothing else), all on one fast upstream, alternated rounds (A B C D E F, A B C D E F, ...)
// per load generator, medians and ratios from the same run. Where taskset is on PATH, the server under test has a
// core to itself (see pin() in lib.ts).
import type { ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import {
  autocannonLoad,
  type CpuSample,
  freePort,
  hasCommand,
  LOAD_CORE,
  type LoadResult,
  loadWithCpu,
  median,
  medianOfRounds,
  PROXY_CORE,
  pin,
  pinLoadGenerator,
  processTree,
  REPO,
  startBluegreen,
  startCaddyProxy,
  startFastUpstream,
  startNginxProxy,
  startProcess,
  stopProcess,
  table,
  unpinLoadGenerator,
  waitForHttp,
  writeResult,
  wrkLoad,
} from './lib.ts'

const ROUNDS = Number(process.env.BENCH_PEERS_ROUNDS ?? process.env.BENCH_ROUNDS ?? 5)
const SECONDS = Number(process.env.BENCH_PEERS_SECONDS ?? 3)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const WARM_UP_SECONDS = Number(process.env.BENCH_PEERS_WARMUP_SECONDS ?? 5)

interface Contender {
  name: string
  url: string
  child: ChildProcess
  /** The server's processes (nginx: master and worker), whose CPU time each round counts. */
  pids: number[]
}

async function startPeer(file: string, port: number, upstream: string): Promise<ChildProcess> {
  const child = startProcess(process.execPath, [join(REPO, 'bench/peers', file), String(port), upstream])
  await waitForHttp(`http://127.0.0.1:${port}/`)
  return child
}

export async function peers(): Promise<Record<string, unknown>> {
  const placement = await pinLoadGenerator()
  const upstreamPort = await freePort()
  const upstream = await startFastUpstream(upstreamPort)
  await pin(upstream.child.pid, LOAD_CORE)
  const direct = `http://127.0.0.1:${upstreamPort}`
  const contenders: Contender[] = [
    {
      name: 'direct',
      url: `${direct}/`,
      child: upstream.child,
      pids: await processTree(upstream.child.pid!),
    },
  ]
  const add = async (name: string, start: (port: number) => Promise<ChildProcess>) => {
    const port = await freePort()
    const child = await start(port)
    await pin(child.pid, PROXY_CORE)
    contenders.push({ name, url: `http://127.0.0.1:${port}/`, child, pids: await processTree(child.pid!) })
  }
  const tools: { name: string; load: (url: string, seconds?: number) => Promise<LoadResult> }[] = []
  if (await hasCommand('wrk'))
    tools.push({ name: 'wrk', load: (url, seconds = SECONDS) => wrkLoad(url, seconds, CONNECTIONS) })
  else console.log('skipped: wrk not on PATH (autocannon only)')
  tools.push({
    name: 'autocannon',
    load: (url, seconds = SECONDS) => autocannonLoad(url, seconds, CONNECTIONS),
  })

  const samples: Record<string, Record<string, CpuSample[]>> = {}
  try {
    await add('bluegreen', async (port) => {
      const proxy = await startBluegreen(port, {
        admin: { listen: `127.0.0.1:${await freePort()}` },
        pools: { blue: { upstreams: [direct] }, green: { upstreams: [direct] } },
      })
      return proxy.child
    })
    await add('http-proxy-3', (port) => startPeer('http-proxy-3.ts', port, direct))
    await add('fastify', (port) => startPeer('fastify.ts', port, direct))
    await add('undici (minimal)', (port) => startPeer('undici.ts', port, direct))
    if (await hasCommand('nginx'))
      await add('nginx', (port) => startNginxProxy(port, `127.0.0.1:${upstreamPort}`))
    else console.log('skipped: nginx not on PATH (no nginx proxy in the comparison)')
    if (await hasCommand('caddy'))
      await add('caddy', (port) => startCaddyProxy(port, `127.0.0.1:${upstreamPort}`))
    else console.log('skipped: caddy not on PATH (no Caddy proxy in the comparison)')

    for (const tool of tools) {
      const byContender: Record<string, CpuSample[]> = {}
      samples[tool.name] = byContender
      // Warm-up: the JIT and every keep-alive pool in steady state before the first measured round (the
      // second load generator finds them warm already).
      const warmUp = tool === tools[0] ? WARM_UP_SECONDS : 1
      for (const contender of contenders) await tool.load(contender.url, warmUp)
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
  }

  const rows: Record<string, string | number>[] = []
  const ratios: Record<string, string | number>[] = []
  const rps = (tool: string, name: string) => {
    const list = samples[tool]?.[name]
    return list ? median(list.map((s) => s.requestsPerSecond)) : Number.NaN
  }
  for (const tool of tools) {
    for (const [name, list] of Object.entries(samples[tool.name]!)) {
      rows.push({
        load: tool.name,
        target: name,
        'req/s (median)': Math.round(rps(tool.name, name)),
        'p50 ms': median(list.map((s) => s.latencyP50Ms)),
        'p99 ms': median(list.map((s) => s.latencyP99Ms)),
        'CPU µs/req': Number(median(list.map((s) => s.cpuMicrosPerRequest)).toFixed(1)),
        errors: list.reduce((sum, s) => sum + s.errors + s.non2xx, 0),
        'vs direct': Number((rps(tool.name, name) / rps(tool.name, 'direct')).toFixed(2)),
      })
    }
    // The median of each round's ratio: a round's contenders ran seconds apart, so drift in what else the
    // machine is doing cancels out better than in a ratio of medians.
    // By CPU per request too, theirs over ours: the same question (how much one core serves) asked of the CPU
    // each request took, which waiting for a core does not inflate.
    const ours = samples[tool.name]!.bluegreen!
    const ratio = (name: string, of: (ours: CpuSample, theirs: CpuSample) => number) => {
      const theirs = samples[tool.name]![name]
      if (!theirs) return 'n/a'
      return Number(medianOfRounds(ours, theirs, of).toFixed(2))
    }
    for (const [measure, of] of [
      ['req/s, ours / theirs', (o: CpuSample, t: CpuSample) => o.requestsPerSecond / t.requestsPerSecond],
      [
        'CPU per request, theirs / ours',
        (o: CpuSample, t: CpuSample) => t.cpuMicrosPerRequest / o.cpuMicrosPerRequest,
      ],
    ] as const) {
      ratios.push({
        load: tool.name,
        measure,
        'vs http-proxy-3 (target 2.5x)': ratio('http-proxy-3', of),
        'vs fastify (target 1.5x)': ratio('fastify', of),
        'vs nginx per core (target 0.3x, aim 0.5x)': ratio('nginx', of),
        'vs caddy per core': ratio('caddy', of),
        'vs undici (minimal), its own floor': ratio('undici (minimal)', of),
      })
    }
  }
  console.log(
    `\npeers: ${ROUNDS} alternated rounds of ${SECONDS}s per load generator, ${CONNECTIONS} connections, ` +
      `13-byte responses from ${upstream.kind}.\n${placement} (wrk -t1, or autocannon in the bench process).\n`,
  )
  console.log(table(rows))
  console.log(
    "\nbluegreen against each peer (median of the rounds' ratios; above 1: bluegreen does better)\n",
  )
  console.log(table(ratios))
  const result = {
    rounds: ROUNDS,
    seconds: SECONDS,
    connections: CONNECTIONS,
    upstream: upstream.kind,
    placement,
    rows,
    ratios,
    samples,
  }
  console.log(`\nwritten to ${await writeResult('peers', result)}`)
  return result
}

if (import.meta.main) {
  await peers()
  process.exit(0)
}
