// Question: how does throughput grow with `bluegreen serve --workers N`? N = 1 up to the machine's cores (at most 4),
// against a single process (no --workers) as the baseline, alternated rounds on one fast upstream, medians and each
// N's ratio to the single process. Nothing is pinned: the workers are meant to spread over every core. On a machine
// where the load generator and the upstream share those cores, N workers cannot reach N times the rate.
import { availableParallelism } from 'node:os'
import {
  freePort,
  hasCommand,
  type LoadResult,
  median,
  medianOfRounds,
  startBluegreen,
  startFastUpstream,
  stopProcess,
  table,
  writeResult,
  wrkLoad,
} from './lib.ts'

const ROUNDS = Number(process.env.BENCH_WORKERS_ROUNDS ?? process.env.BENCH_ROUNDS ?? 3)
const SECONDS = Number(process.env.BENCH_WORKERS_SECONDS ?? 4)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const MAX_WORKERS = Math.min(availableParallelism(), Number(process.env.BENCH_WORKERS_MAX ?? 4))

/** Waits until `count` different workers have answered GET /state, each on a connection of its own. */
async function allWorkersUp(admin: string, count: number): Promise<void> {
  const seen = new Set<string>()
  const deadline = Date.now() + 15_000
  while (seen.size < count) {
    if (Date.now() > deadline) throw new Error(`only ${seen.size} of ${count} workers answered within 15 s`)
    try {
      const response = await fetch(`${admin}/state`, { headers: { connection: 'close' } })
      const body = (await response.json()) as { replica: { id: string } }
      seen.add(body.replica.id)
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
}

export async function workers(): Promise<Record<string, unknown>> {
  if (!(await hasCommand('wrk'))) {
    console.log(
      'skipped: wrk not on PATH (the workers question needs a load generator that is not the bottleneck)',
    )
    return {}
  }
  const upstreamPort = await freePort()
  const upstream = await startFastUpstream(upstreamPort)
  const direct = `http://127.0.0.1:${upstreamPort}`
  const contenders: { name: string; workers: number; url: string; stop: () => Promise<void> }[] = []
  const samples: Record<string, LoadResult[]> = {}
  try {
    for (let count = 0; count <= MAX_WORKERS; count++) {
      const adminPort = await freePort()
      const proxy = await startBluegreen(
        await freePort(),
        {
          admin: { listen: `127.0.0.1:${adminPort}` },
          pools: { blue: { upstreams: [direct] }, green: { upstreams: [direct] } },
        },
        { serveArguments: count === 0 ? [] : ['--workers', String(count)] },
      )
      if (count > 0) await allWorkersUp(`http://127.0.0.1:${adminPort}`, count)
      contenders.push({
        name: count === 0 ? 'single process' : `--workers ${count}`,
        workers: count,
        url: `${proxy.url}/`,
        stop: () => stopProcess(proxy.child),
      })
    }
    for (const contender of contenders) await wrkLoad(contender.url, 2, CONNECTIONS)
    for (let round = 0; round < ROUNDS; round++) {
      for (const contender of contenders) {
        samples[contender.name] ??= []
        samples[contender.name]!.push(await wrkLoad(contender.url, SECONDS, CONNECTIONS))
      }
    }
  } finally {
    for (const contender of contenders) await contender.stop()
    await stopProcess(upstream.child)
  }

  const single = samples['single process']!
  const rows = contenders.map(({ name }) => {
    const list = samples[name]!
    return {
      proxy: name,
      'req/s (median)': Math.round(median(list.map((s) => s.requestsPerSecond))),
      'p99 ms': median(list.map((s) => s.latencyP99Ms)),
      errors: list.reduce((sum, s) => sum + s.errors + s.non2xx, 0),
      'vs single process': Number(
        medianOfRounds(list, single, (s, one) => s.requestsPerSecond / one.requestsPerSecond).toFixed(2),
      ),
    }
  })
  console.log(
    `\nworkers: wrk -t1 -c${CONNECTIONS}, ${ROUNDS} alternated rounds of ${SECONDS}s, upstream ${upstream.kind}, ` +
      `${availableParallelism()} cores shared with the load generator and the upstream\n`,
  )
  console.log(table(rows))
  const result = { rounds: ROUNDS, seconds: SECONDS, connections: CONNECTIONS, rows, samples }
  console.log(`\nwritten to ${await writeResult('workers', result)}`)
  return result
}

if (import.meta.main) {
  await workers()
  process.exit(0)
}
