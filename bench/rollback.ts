// Question: how long from the moment green starts failing to the automatic rollback being applied?
// Steady load through the proxy (default rollback settings), a switch to a healthy green, then green turns to
// 500s; the time until GET /state shows blue again, over several rounds.
import autocannon from 'autocannon'
import { median, startColorRig, table, writeResult } from './lib.ts'

const ROUNDS = Number(process.env.BENCH_ROLLBACK_ROUNDS ?? 5)
const RATE = Number(process.env.BENCH_ROLLBACK_RATE ?? 1000)

async function post(url: string, body?: unknown): Promise<Response> {
  return fetch(url, { method: 'POST', body: body === undefined ? undefined : JSON.stringify(body) })
}

export async function rollback(): Promise<Record<string, unknown>> {
  const rig = await startColorRig({ log: { level: 'warn' } })
  const { admin, greenPort, proxy } = rig
  // With a callback autocannon returns the running instance, which can be stopped.
  const load = autocannon(
    { url: `${proxy.url}/`, connections: 10, overallRate: RATE, duration: ROUNDS * 8 + 5 },
    () => {},
  )
  const times: number[] = []
  try {
    for (let round = 0; round < ROUNDS; round++) {
      await post(`http://127.0.0.1:${greenPort}/__heal`)
      const switched = await post(`${admin}/switch`, { to: 'green' })
      if (!switched.ok) throw new Error(`switch to green: ${switched.status} ${await switched.text()}`)
      // Two to three seconds of healthy traffic on green, as after a real release; the random part keeps the
      // onset of errors from locking onto the phase of the proxy's one-second evaluations.
      await new Promise((resolve) => setTimeout(resolve, 2000 + Math.random() * 1000))
      const failedAt = performance.now()
      await post(`http://127.0.0.1:${greenPort}/__fail`)
      for (;;) {
        const state = (await (await fetch(`${admin}/state`)).json()) as { active: string }
        if (state.active === 'blue') break
        if (performance.now() - failedAt > 10_000) throw new Error('no rollback within 10 s')
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      times.push(performance.now() - failedAt)
    }
  } finally {
    load.stop()
    await rig.stop()
  }
  const sorted = [...times].sort((a, b) => a - b)
  const rows = [
    {
      measure: 'errors begin -> rollback applied',
      rounds: ROUNDS,
      'median ms': Math.round(median(sorted)),
      'max ms': Math.round(sorted.at(-1)!),
    },
  ]
  console.log(
    `\nrollback: default thresholds (5% errors over at least 50 requests, evaluated every 1 s), ${RATE} req/s\n`,
  )
  console.log(table(rows))
  const result = { rounds: ROUNDS, rate: RATE, timesMs: times }
  console.log(`\nwritten to ${await writeResult('rollback', result)}`)
  return result
}

if (import.meta.main) await rollback()
