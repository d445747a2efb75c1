// Question: how many requests/s does bluegreen-proxy serve, against the same upstream reached directly?
// Alternated rounds (direct, proxy, direct, proxy, ...) and medians, all in one run.
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

export async function throughput(): Promise<Record<string, unknown>> {
  const upstreamPort = await freePort()
  const upstream = await startUpstream(upstreamPort)
  const direct = `http://127.0.0.1:${upstreamPort}/`
  const proxy = await startBluegreen(await freePort(), {
    admin: { listen: `127.0.0.1:${await freePort()}` },
    pools: { blue: { upstreams: [direct] }, green: { upstreams: [direct] } },
    log: { level: 'warn' },
  })
  const tools: { name: string; load: (url: string) => Promise<LoadResult> }[] = [
    { name: 'autocannon', load: (url) => autocannonLoad(url, SECONDS, CONNECTIONS) },
  ]
  if (await hasCommand('wrk')) tools.push({ name: 'wrk', load: (url) => wrkLoad(url, SECONDS, CONNECTIONS) })

  const rows: Record<string, string | number>[] = []
  const raw: Record<string, Record<string, LoadResult[]>> = {}
  try {
    for (const tool of tools) {
      const samples: Record<string, LoadResult[]> = { direct: [], proxy: [] }
      // A short warm-up so the JIT and the keep-alive pools are in steady state before measuring.
      await tool.load(`${proxy.url}/`)
      for (let round = 0; round < ROUNDS; round++) {
        samples.direct!.push(await tool.load(direct))
        samples.proxy!.push(await tool.load(`${proxy.url}/`))
      }
      raw[tool.name] = samples
      const directRps = median(samples.direct!.map((s) => s.requestsPerSecond))
      for (const [target, list] of Object.entries(samples)) {
        const rps = median(list.map((s) => s.requestsPerSecond))
        rows.push({
          load: tool.name,
          target,
          'req/s (median)': Math.round(rps),
          'p50 ms': median(list.map((s) => s.latencyP50Ms)),
          'p99 ms': median(list.map((s) => s.latencyP99Ms)),
          errors: list.reduce((sum, s) => sum + s.errors + s.non2xx, 0),
          'vs direct': Number((rps / directRps).toFixed(2)),
        })
      }
    }
  } finally {
    await stopProcess(proxy.child)
    await stopProcess(upstream)
  }
  console.log(
    `\nthroughput: ${ROUNDS} alternated rounds of ${SECONDS}s, ${CONNECTIONS} connections, 13-byte responses\n`,
  )
  console.log(table(rows))
  const result = { rounds: ROUNDS, seconds: SECONDS, connections: CONNECTIONS, rows, raw }
  console.log(`\nwritten to ${await writeResult('throughput', result)}`)
  return result
}

if (import.meta.main) await throughput()
