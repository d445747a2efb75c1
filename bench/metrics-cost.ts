// Question: what do the per-request metrics cost? The same proxy with metrics.enabled true and false, alternated.
import type { ChildProcess } from 'node:child_process'
import {
  autocannonLoad,
  type CpuSample,
  freePort,
  hasCommand,
  LOAD_CORE,
  loadWithCpu,
  median,
  medianOfRounds,
  PROXY_CORE,
  pin,
  pinLoadGenerator,
  startBluegreen,
  startUpstream,
  stopProcess,
  table,
  unpinLoadGenerator,
  writeResult,
  wrkLoad,
} from './lib.ts'

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)

export async function metricsCost(): Promise<Record<string, unknown>> {
  const placement = await pinLoadGenerator()
  const upstreamPort = await freePort()
  const upstream = await startUpstream(upstreamPort)
  await pin(upstream.pid, LOAD_CORE)
  const target = `http://127.0.0.1:${upstreamPort}`
  const proxy = async (enabled: boolean) =>
    startBluegreen(await freePort(), {
      admin: { listen: `127.0.0.1:${await freePort()}` },
      pools: { blue: { upstreams: [target] }, green: { upstreams: [target] } },
      metrics: { enabled },
      log: { level: 'warn' },
    })
  const on = await proxy(true)
  const off = await proxy(false)
  await pin(on.child.pid, PROXY_CORE)
  await pin(off.child.pid, PROXY_CORE)
  const load = (await hasCommand('wrk'))
    ? { name: 'wrk', run: (url: string) => wrkLoad(url, SECONDS, CONNECTIONS) }
    : { name: 'autocannon', run: (url: string) => autocannonLoad(url, SECONDS, CONNECTIONS) }
  const samples: Record<string, CpuSample[]> = { 'metrics on': [], 'metrics off': [] }
  // Each round also counts the CPU the proxy spent per request, steadier than req/s on a shared machine.
  const measure = (proxy: { child: ChildProcess; url: string }) =>
    loadWithCpu([proxy.child.pid!], SECONDS, () => load.run(`${proxy.url}/`))
  try {
    await load.run(`${on.url}/`)
    await load.run(`${off.url}/`)
    for (let round = 0; round < ROUNDS; round++) {
      samples['metrics on']!.push(await measure(on))
      samples['metrics off']!.push(await measure(off))
    }
  } finally {
    await unpinLoadGenerator()
    await Promise.all([stopProcess(on.child), stopProcess(off.child), stopProcess(upstream)])
  }
  // Medians of each round's ratio: the two ran seconds apart, so drift in what else the machine does cancels out.
  const baseline = samples['metrics off']!
  const rows = Object.entries(samples).map(([name, list]) => ({
    proxy: name,
    'req/s (median)': Math.round(median(list.map((s) => s.requestsPerSecond))),
    'p99 ms': median(list.map((s) => s.latencyP99Ms)),
    'CPU µs/req': Number(median(list.map((s) => s.cpuMicrosPerRequest)).toFixed(1)),
    'req/s vs off': Number(
      medianOfRounds(list, baseline, (s, off) => s.requestsPerSecond / off.requestsPerSecond).toFixed(3),
    ),
    'CPU vs off': Number(
      medianOfRounds(list, baseline, (s, off) => s.cpuMicrosPerRequest / off.cpuMicrosPerRequest).toFixed(3),
    ),
  }))
  console.log(
    `\nmetrics cost: ${load.name}, ${ROUNDS} alternated rounds of ${SECONDS}s, ${CONNECTIONS} connections; ` +
      `${placement}\n`,
  )
  console.log(table(rows))
  const result = { tool: load.name, rounds: ROUNDS, seconds: SECONDS, placement, rows, samples }
  console.log(`\nwritten to ${await writeResult('metrics-cost', result)}`)
  return result
}

if (import.meta.main) await metricsCost()
