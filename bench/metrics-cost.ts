// Question: what do the per-request metrics cost? The same proxy with metrics.enabled true and false, alternated.
import {
  autocannonLoad,
  freePort,
  hasCommand,
  type LoadResult,
  median,
  startBluegreen,
  startUpstream,
  stopProcess,
  table,
  writeResult,
  wrkLoad,
} from './lib.ts'

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)

export async function metricsCost(): Promise<Record<string, unknown>> {
  const upstreamPort = await freePort()
  const upstream = await startUpstream(upstreamPort)
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
  const load = (await hasCommand('wrk'))
    ? { name: 'wrk', run: (url: string) => wrkLoad(url, SECONDS, CONNECTIONS) }
    : { name: 'autocannon', run: (url: string) => autocannonLoad(url, SECONDS, CONNECTIONS) }
  const samples: Record<string, LoadResult[]> = { 'metrics on': [], 'metrics off': [] }
  try {
    await load.run(`${on.url}/`)
    await load.run(`${off.url}/`)
    for (let round = 0; round < ROUNDS; round++) {
      samples['metrics on']!.push(await load.run(`${on.url}/`))
      samples['metrics off']!.push(await load.run(`${off.url}/`))
    }
  } finally {
    await Promise.all([stopProcess(on.child), stopProcess(off.child), stopProcess(upstream)])
  }
  const offRps = median(samples['metrics off']!.map((s) => s.requestsPerSecond))
  const rows = Object.entries(samples).map(([name, list]) => {
    const rps = median(list.map((s) => s.requestsPerSecond))
    return {
      proxy: name,
      'req/s (median)': Math.round(rps),
      'p99 ms': median(list.map((s) => s.latencyP99Ms)),
      'vs off': Number((rps / offRps).toFixed(3)),
    }
  })
  console.log(
    `\nmetrics cost: ${load.name}, ${ROUNDS} alternated rounds of ${SECONDS}s, ${CONNECTIONS} connections\n`,
  )
  console.log(table(rows))
  const result = { tool: load.name, rounds: ROUNDS, seconds: SECONDS, rows, samples }
  console.log(`\nwritten to ${await writeResult('metrics-cost', result)}`)
  return result
}

if (import.meta.main) await metricsCost()
