// Question: what does mirroring cost the proxy, and does a slow idle color reach the clients? One proxy, one fast
// upstream per color; alternated rounds with 0%, 10% and 100% of requests copied to green (POST /mirror between
// rounds): req/s and the proxy's CPU per request. Then a second proxy whose green answers after 300 ms: the
// clients' p50/p99 at a paced rate with mirroring off and at 100%, alternated. Short rounds: run it once.
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import {
  autocannonLoad,
  type CpuSample,
  freePort,
  hasCommand,
  LOAD_CORE,
  type LoadResult,
  loadWithCpu,
  median,
  PROXY_CORE,
  pin,
  pinLoadGenerator,
  startBluegreen,
  startFastUpstream,
  stopProcess,
  table,
  unpinLoadGenerator,
  writeResult,
  wrkLoad,
} from './lib.ts'

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const SHARES = [0, 10, 100]
/** The slow green's delay, and the paced rate of the latency rounds (well under what the proxy can serve). */
const SLOW_MS = 300
const PACED_RATE = 200

async function setMirror(admin: string, percent: number): Promise<void> {
  const body = percent === 0 ? { enabled: false } : { percent }
  const response = await fetch(`${admin}/mirror`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  if (!response.ok)
    throw new Error(`POST /mirror ${JSON.stringify(body)}: ${response.status} ${await response.text()}`)
}

async function mirrorResults(admin: string): Promise<Record<string, number>> {
  const status = (await (await fetch(`${admin}/mirror`)).json()) as { results: Record<string, number> }
  return status.results
}

export async function mirror(): Promise<Record<string, unknown>> {
  const placement = await pinLoadGenerator()
  const [bluePort, greenPort] = [await freePort(), await freePort()]
  const blue = await startFastUpstream(bluePort)
  const green = await startFastUpstream(greenPort)
  for (const upstream of [blue, green]) await pin(upstream.child.pid, LOAD_CORE)
  // Green that answers after SLOW_MS, in this process (a timer per request costs the load generator next to nothing).
  const slow = createServer((_req, res) => {
    setTimeout(() => res.end('hello, world\n'), SLOW_MS)
  }).listen(0, '127.0.0.1')
  await new Promise((resolve) => slow.once('listening', resolve))
  const slowUrl = `http://127.0.0.1:${(slow.address() as AddressInfo).port}`
  const adminPort = await freePort()
  const slowAdminPort = await freePort()
  const proxy = await startBluegreen(await freePort(), {
    admin: { listen: `127.0.0.1:${adminPort}` },
    pools: {
      blue: { upstreams: [`http://127.0.0.1:${bluePort}`] },
      green: { upstreams: [`http://127.0.0.1:${greenPort}`] },
    },
    log: { level: 'warn' },
  })
  const slowProxy = await startBluegreen(await freePort(), {
    admin: { listen: `127.0.0.1:${slowAdminPort}` },
    pools: { blue: { upstreams: [`http://127.0.0.1:${bluePort}`] }, green: { upstreams: [slowUrl] } },
    log: { level: 'warn' },
  })
  const admin = `http://127.0.0.1:${adminPort}`
  const slowAdmin = `http://127.0.0.1:${slowAdminPort}`
  const useWrk = await hasCommand('wrk')
  const load = (url: string): Promise<LoadResult> =>
    useWrk ? wrkLoad(url, SECONDS, CONNECTIONS) : autocannonLoad(url, SECONDS, CONNECTIONS)
  const samples: Record<number, CpuSample[]> = Object.fromEntries(SHARES.map((share) => [share, []]))
  const results: Record<number, Record<string, number>> = Object.fromEntries(
    SHARES.map((share) => [share, {}]),
  )
  const latency: Record<string, LoadResult[]> = { off: [], 'on, 100%': [] }
  try {
    for (const each of [proxy, slowProxy]) await pin(each.child.pid, PROXY_CORE)
    await setMirror(admin, 100)
    await load(`${proxy.url}/`)
    for (let round = 0; round < ROUNDS; round++) {
      for (const share of SHARES) {
        await setMirror(admin, share)
        const before = await mirrorResults(admin)
        samples[share]!.push(await loadWithCpu([proxy.child.pid!], SECONDS, () => load(`${proxy.url}/`)))
        const after = await mirrorResults(admin)
        const totals = results[share]!
        for (const [result, count] of Object.entries(after))
          totals[result] = (totals[result] ?? 0) + count - (before[result] ?? 0)
      }
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, share] of [
        ['off', 0],
        ['on, 100%', 100],
      ] as const) {
        await setMirror(slowAdmin, share)
        latency[name]!.push(await autocannonLoad(`${slowProxy.url}/`, SECONDS, 20, PACED_RATE))
      }
    }
  } finally {
    await unpinLoadGenerator()
    await stopProcess(proxy.child)
    await stopProcess(slowProxy.child)
    await stopProcess(blue.child)
    await stopProcess(green.child)
    slow.closeAllConnections()
    slow.close()
  }
  const baseRps = median(samples[0]!.map((sample) => sample.requestsPerSecond))
  const baseCpu = median(samples[0]!.map((sample) => sample.cpuMicrosPerRequest))
  const rows = SHARES.map((share) => {
    const list = samples[share]!
    const rps = median(list.map((sample) => sample.requestsPerSecond))
    const cpu = median(list.map((sample) => sample.cpuMicrosPerRequest))
    const counted = results[share]!
    return {
      mirrored: `${share}%`,
      'req/s (median)': Math.round(rps),
      'vs off': Number((rps / baseRps).toFixed(2)),
      'CPU µs/req (median)': Number(cpu.toFixed(1)),
      'CPU vs off': Number((cpu / baseCpu).toFixed(2)),
      'p99 ms': median(list.map((sample) => sample.latencyP99Ms)),
      'copies: match/mismatch/error/dropped': `${counted.match ?? 0}/${counted.mismatch ?? 0}/${counted.error ?? 0}/${counted.dropped ?? 0}`,
    }
  })
  const latencyRows = Object.entries(latency).map(([name, list]) => ({
    [`mirror to a green answering in ${SLOW_MS} ms`]: name,
    'client p50 ms (median)': median(list.map((sample) => sample.latencyP50Ms)),
    'client p99 ms (median)': median(list.map((sample) => sample.latencyP99Ms)),
    errors: list.reduce((sum, sample) => sum + sample.errors + sample.non2xx, 0),
  }))
  console.log(
    `\nmirror: ${useWrk ? 'wrk -t1' : 'autocannon'} -c${CONNECTIONS}, ${ROUNDS} alternated rounds of ${SECONDS}s; ${placement}; ${blue.kind}\n`,
  )
  console.log(table(rows))
  console.log(
    `\nclient latency at ${PACED_RATE} req/s (autocannon, 20 connections), ${ROUNDS} alternated rounds of ${SECONDS}s\n`,
  )
  console.log(table(latencyRows))
  const result = {
    rounds: ROUNDS,
    seconds: SECONDS,
    connections: CONNECTIONS,
    placement,
    rows,
    latencyRows,
    samples,
    latency,
  }
  console.log(`\nwritten to ${await writeResult('mirror', result)}`)
  return result
}

if (import.meta.main) {
  await mirror()
  process.exit(0)
}
