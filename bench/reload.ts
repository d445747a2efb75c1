// Question: what does a config reload cost under load, and does any request fail? wrk (autocannon without it)
// against `bluegreen serve` for SECONDS without reloads, then for SECONDS while POST /reload runs every 0.5 s, each
// reload swapping one of blue's two upstreams for a third (one added, one removed and drained every time).
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  autocannonLoad,
  freePort,
  hasCommand,
  type LoadResult,
  median,
  REPO,
  sleep,
  startProcess,
  startUpstream,
  stopProcess,
  table,
  waitForHttp,
  writeResult,
  wrkLoad,
} from './lib.ts'

const SECONDS = Number(process.env.BENCH_RELOAD_SECONDS ?? 10)
const CONNECTIONS = Number(process.env.BENCH_RELOAD_CONNECTIONS ?? 50)
const EVERY_MS = 500

export async function reload(): Promise<Record<string, unknown>> {
  const [proxyPort, adminPort, ...upstreamPorts] = await Promise.all(
    Array.from({ length: 6 }, () => freePort()),
  )
  const upstreams = await Promise.all(upstreamPorts.map((port) => startUpstream(port)))
  const urls = upstreamPorts.map((port) => `http://127.0.0.1:${port}`)
  const dir = await mkdtemp(join(tmpdir(), 'bluegreen-bench-reload-'))
  const file = join(dir, 'config.json')
  const write = (blue: string[]) =>
    writeFile(
      file,
      JSON.stringify({
        listen: `127.0.0.1:${proxyPort}`,
        admin: { listen: `127.0.0.1:${adminPort}` },
        pools: { blue: { upstreams: blue }, green: { upstreams: [urls[2]] } },
        state: { path: join(dir, 'state.json') },
        log: { level: 'warn' },
      }),
    )
  await write([urls[0]!, urls[1]!])
  const proxy = startProcess(process.execPath, [join(REPO, 'src/cli.ts'), 'serve', '--config', file])
  const url = `http://127.0.0.1:${proxyPort}/`
  const admin = `http://127.0.0.1:${adminPort}`
  await waitForHttp(url)
  const useWrk = await hasCommand('wrk')
  const load = (): Promise<LoadResult> =>
    useWrk ? wrkLoad(url, SECONDS, CONNECTIONS) : autocannonLoad(url, SECONDS, CONNECTIONS)
  try {
    await load() // warm-up, not counted
    const without = await load()
    // The reloads run beside the load, each as soon as the last was answered and 0.5 s has passed.
    let running = true
    const reloadTimes: number[] = []
    let failedReloads = 0
    const reloading = (async () => {
      for (let i = 0; running; i++) {
        const started = performance.now()
        // Blue alternates between [u0, u1] and [u0, u3]: each reload adds one upstream and drains another.
        await write([urls[0]!, urls[i % 2 === 0 ? 3 : 1]!])
        const answer = await fetch(`${admin}/reload`, { method: 'POST' })
        const outcome = (await answer.json()) as { result?: string }
        if (answer.status !== 200 || outcome.result !== 'applied') {
          failedReloads++
          if (failedReloads === 1)
            console.error(`a reload failed: ${answer.status} ${JSON.stringify(outcome)}`)
        }
        reloadTimes.push(performance.now() - started)
        await sleep(Math.max(0, EVERY_MS - (performance.now() - started)))
      }
    })()
    const withReloads = await load()
    running = false
    await reloading
    const row = (name: string, result: LoadResult, reloads: string) => ({
      run: name,
      'req/s': Math.round(result.requestsPerSecond),
      'p50 ms': result.latencyP50Ms,
      'p99 ms': result.latencyP99Ms,
      errors: result.errors,
      'non-2xx': result.non2xx,
      reloads,
    })
    const rows = [
      row('no reloads', without, '0'),
      row(
        'reload every 0.5 s',
        withReloads,
        `${reloadTimes.length} (${failedReloads} failed; median ${Math.round(median(reloadTimes))} ms)`,
      ),
    ]
    console.log(
      `\nreload: ${useWrk ? 'wrk' : 'autocannon'} -c${CONNECTIONS} for ${SECONDS} s each; each reload adds one blue upstream and removes another\n`,
    )
    console.log(table(rows))
    const result = { seconds: SECONDS, connections: CONNECTIONS, tool: useWrk ? 'wrk' : 'autocannon', rows }
    console.log(`\nwritten to ${await writeResult('reload', result)}`)
    return result
  } finally {
    await stopProcess(proxy)
    await Promise.all(upstreams.map((upstream) => stopProcess(upstream)))
  }
}

if (import.meta.main) {
  await reload()
  process.exit(0)
}
