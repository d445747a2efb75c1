// Question: how much latency does the proxy add at a moderate load? First the proxy's maximum req/s, then a
// fixed rate of about 30% of it, alternated rounds direct / through the proxy, p50 and p99 minus direct.
//
// The paced load is wrk with a Lua `delay()`: each of the connections waits a random 0..2x its share of the
// interval after every response, so arrivals spread out instead of coming in bursts, and wrk measures in
// microseconds. autocannon's overallRate is the fallback only: it sends each second's quota at full speed at the
// start of the second (so its latency is the latency at full load) and records whole milliseconds.
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  autocannonLoad,
  freePort,
  hasCommand,
  LOAD_CORE,
  type LoadResult,
  median,
  PROXY_CORE,
  pin,
  pinLoadGenerator,
  REPO,
  startBluegreen,
  startFastUpstream,
  startProcess,
  stopProcess,
  table,
  unpinLoadGenerator,
  waitForHttp,
  writeResult,
  wrkLoad,
} from './lib.ts'

const ROUNDS = Number(process.env.BENCH_LATENCY_ROUNDS ?? process.env.BENCH_ROUNDS ?? 3)
const SECONDS = Number(process.env.BENCH_LATENCY_SECONDS ?? 4)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const SHARE = Number(process.env.BENCH_LATENCY_SHARE ?? 0.3)

export async function latency(): Promise<Record<string, unknown>> {
  const placement = await pinLoadGenerator()
  const upstreamPort = await freePort()
  const upstream = await startFastUpstream(upstreamPort)
  await pin(upstream.child.pid, LOAD_CORE)
  const direct = `http://127.0.0.1:${upstreamPort}`
  const useWrk = await hasCommand('wrk')
  if (!useWrk) console.log('skipped: wrk not on PATH (autocannon overallRate instead: bursty, whole ms)')
  const samples: Record<string, LoadResult[]> = { direct: [], 'undici (minimal)': [], bluegreen: [] }
  let maximum: LoadResult
  let rate: number
  let delayMs = 0
  const proxy = await startBluegreen(await freePort(), {
    admin: { listen: `127.0.0.1:${await freePort()}` },
    pools: { blue: { upstreams: [direct] }, green: { upstreams: [direct] } },
  })
  await pin(proxy.child.pid, PROXY_CORE)
  // The floor of the stack (node:http into undici, nothing else) under the same pacing: what any proxy built on
  // it adds, so the difference to bluegreen is what its features add.
  const floorPort = await freePort()
  const floor = startProcess(process.execPath, [
    join(REPO, 'bench/peers/undici.ts'),
    String(floorPort),
    direct,
  ])
  await waitForHttp(`http://127.0.0.1:${floorPort}/`)
  await pin(floor.pid, PROXY_CORE)
  try {
    const target = {
      direct: `${direct}/`,
      'undici (minimal)': `http://127.0.0.1:${floorPort}/`,
      bluegreen: `${proxy.url}/`,
    }
    if (useWrk) {
      await wrkLoad(target.bluegreen, 2, CONNECTIONS)
      maximum = await wrkLoad(target.bluegreen, 3, CONNECTIONS)
      rate = maximum.requestsPerSecond * SHARE
      // Each connection sends one request per CONNECTIONS / rate seconds on average.
      delayMs = Math.max(1, Math.round((CONNECTIONS * 1000) / rate))
      const script = join(await mkdtemp(join(tmpdir(), 'bluegreen-bench-')), 'paced.lua')
      await writeFile(script, `function delay() return math.random(0, ${2 * delayMs}) end\n`)
      for (let round = 0; round < ROUNDS; round++) {
        for (const [name, url] of Object.entries(target))
          samples[name]!.push(await wrkLoad(url, SECONDS, CONNECTIONS, script))
      }
    } else {
      await autocannonLoad(target.bluegreen, 2, CONNECTIONS)
      maximum = await autocannonLoad(target.bluegreen, 3, CONNECTIONS)
      rate = Math.round(maximum.requestsPerSecond * SHARE)
      for (let round = 0; round < ROUNDS; round++) {
        for (const [name, url] of Object.entries(target))
          samples[name]!.push(await autocannonLoad(url, SECONDS, CONNECTIONS, rate))
      }
    }
  } finally {
    await unpinLoadGenerator()
    await stopProcess(floor)
    await stopProcess(proxy.child)
    await stopProcess(upstream.child)
  }

  const p50 = (name: string) => median(samples[name]!.map((s) => s.latencyP50Ms))
  const p99 = (name: string) => median(samples[name]!.map((s) => s.latencyP99Ms))
  const rows = Object.entries(samples).map(([name, list]) => ({
    target: name,
    'req/s (achieved)': Math.round(median(list.map((s) => s.requestsPerSecond))),
    'p50 ms': p50(name),
    'p99 ms': p99(name),
    errors: list.reduce((sum, s) => sum + s.errors + s.non2xx, 0),
  }))
  const added = {
    'p50 added ms': Number((p50('bluegreen') - p50('direct')).toFixed(3)),
    'p99 added ms (target < 1)': Number((p99('bluegreen') - p99('direct')).toFixed(3)),
    'p50 added by the undici floor': Number((p50('undici (minimal)') - p50('direct')).toFixed(3)),
    'p99 added by the undici floor': Number((p99('undici (minimal)') - p99('direct')).toFixed(3)),
  }
  const tool = useWrk
    ? `wrk -t1 paced (random 0..${2 * delayMs} ms between requests)`
    : 'autocannon overallRate'
  console.log(
    `\nlatency: ${tool}, ${CONNECTIONS} connections, target ${Math.round(rate)} req/s = ${SHARE * 100}% of ` +
      `the proxy's ${Math.round(maximum.requestsPerSecond)} req/s maximum; ${ROUNDS} alternated rounds of ` +
      `${SECONDS}s, medians; upstream ${upstream.kind}; ${placement}\n`,
  )
  console.log(table(rows))
  console.log('')
  console.log(table([added]))
  const result = {
    tool,
    connections: CONNECTIONS,
    maximumRequestsPerSecond: maximum.requestsPerSecond,
    targetRate: rate,
    rounds: ROUNDS,
    seconds: SECONDS,
    upstream: upstream.kind,
    placement,
    rows,
    added,
    samples,
  }
  console.log(`\nwritten to ${await writeResult('latency', result)}`)
  return result
}

if (import.meta.main) {
  await latency()
  process.exit(0)
}
