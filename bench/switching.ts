// Question: is a switch free of failed requests? 100 switches (POST /switch, alternating colors) during two loads
// at once: keep-alive connections, and a new connection for every request. Blue and green answer their color, so
// each response says where it went; a response from the old color to a request that STARTED after the switch's
// answer came back is a failure of the switch, as is any error or non-2xx. Target: zero of each.
import { Agent, request } from 'node:http'
import { median, percentile, sleep, startColorRig, table, writeResult } from './lib.ts'

const SWITCHES = Number(process.env.BENCH_SWITCHES ?? 100)
const GAP_MS = Number(process.env.BENCH_SWITCH_GAP_MS ?? 50)
const KEEP_ALIVE = Number(process.env.BENCH_SWITCH_KEEPALIVE_CONNECTIONS ?? 32)
const NEW_CONNECTION_LOOPS = Number(process.env.BENCH_SWITCH_NEW_CONNECTION_LOOPS ?? 4)

interface Answer {
  startedAt: number
  endedAt: number
  status: number
  color: string
}

interface Switch {
  to: string
  sentAt: number
  answeredAt: number
  status: number
}

function get(port: number, agent: Agent | false): Promise<Answer> {
  return new Promise((resolve) => {
    const startedAt = performance.now()
    const failed = () => resolve({ startedAt, endedAt: performance.now(), status: 0, color: '' })
    const req = request({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () =>
        resolve({ startedAt, endedAt: performance.now(), status: res.statusCode ?? 0, color: body.trim() }),
      )
      res.on('error', failed)
    })
    req.setTimeout(5000, () => req.destroy(new Error('timeout')))
    req.on('error', failed)
    req.end()
  })
}

/** `loops` concurrent request loops until stop() says so; each loop waits for its answer before the next. */
async function load(
  port: number,
  agent: Agent | false,
  loops: number,
  stop: () => boolean,
): Promise<Answer[]> {
  const answers: Answer[] = []
  await Promise.all(
    Array.from({ length: loops }, async () => {
      while (!stop()) answers.push(await get(port, agent))
    }),
  )
  return answers
}

/**
 * Sorts each answer against the switches: the color expected is that of the last switch answered before the
 * request started (blue before any). Another color is a failure unless the next switch was already sent before the
 * response ended: then either color is right, and the answer only counts as overlapping.
 */
function judge(answers: Answer[], switches: Switch[]) {
  let errors = 0
  let non2xx = 0
  let oldColor = 0
  let overlapping = 0
  for (const answer of answers) {
    if (answer.status === 0) {
      errors++
      continue
    }
    if (answer.status < 200 || answer.status > 299) {
      non2xx++
      continue
    }
    let last = -1
    for (let low = 0, high = switches.length - 1; low <= high; ) {
      const middle = (low + high) >> 1
      if (switches[middle]!.answeredAt <= answer.startedAt) {
        last = middle
        low = middle + 1
      } else high = middle - 1
    }
    const expected = last === -1 ? 'blue' : switches[last]!.to
    if (answer.color === expected) continue
    const next = switches[last + 1]
    if (next && next.sentAt <= answer.endedAt) overlapping++
    else oldColor++
  }
  return { requests: answers.length, errors, non2xx, oldColor, overlapping }
}

export async function switching(): Promise<Record<string, unknown>> {
  const rig = await startColorRig()
  const { admin, proxyPort } = rig
  const switches: Switch[] = []
  const keepAliveAgent = new Agent({ keepAlive: true, maxSockets: KEEP_ALIVE })
  let stopped = false
  const stop = () => stopped
  const loads = Promise.all([
    load(proxyPort, keepAliveAgent, KEEP_ALIVE, stop),
    load(proxyPort, false, NEW_CONNECTION_LOOPS, stop),
  ])
  const startedAt = performance.now()
  try {
    await sleep(500)
    for (let i = 0; i < SWITCHES; i++) {
      const to = i % 2 === 0 ? 'green' : 'blue'
      const sentAt = performance.now()
      const response = await fetch(`${admin}/switch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ to, reason: 'bench' }),
      })
      // The answer has come back once its status line has: requests after this must see the new color.
      const answeredAt = performance.now()
      await response.arrayBuffer()
      switches.push({ to, sentAt, answeredAt, status: response.status })
      await sleep(GAP_MS)
    }
    await sleep(500)
  } finally {
    stopped = true
  }
  const [keepAlive, fresh] = await loads
  const seconds = (performance.now() - startedAt) / 1000
  keepAliveAgent.destroy()
  await rig.stop()

  const succeeded = switches.filter((s) => s.status === 200)
  const switchMs = succeeded.map((s) => s.answeredAt - s.sentAt).sort((a, b) => a - b)
  const row = (name: string, answers: Answer[]) => {
    const verdict = judge(answers, succeeded)
    return {
      load: name,
      requests: verdict.requests,
      'req/s': Math.round(verdict.requests / seconds),
      errors: verdict.errors,
      'non-2xx': verdict.non2xx,
      'old color after the answer': verdict.oldColor,
      'overlapping the next switch': verdict.overlapping,
    }
  }
  const rows = [
    row(`keep-alive (${KEEP_ALIVE} connections)`, keepAlive),
    row(`new connection per request (${NEW_CONNECTION_LOOPS} loops)`, fresh),
  ]
  const switchRow = {
    switches: switches.length,
    'answered 200': succeeded.length,
    'switch p50 ms': Number(median(switchMs).toFixed(2)),
    'switch p99 ms': Number(percentile(switchMs, 99).toFixed(2)),
  }
  console.log(
    `\nswitching: ${SWITCHES} switches through POST /switch, ${GAP_MS} ms apart, during both loads at once ` +
      `(${seconds.toFixed(1)} s); target: zero errors, non-2xx and old colors\n`,
  )
  console.log(table(rows))
  console.log('')
  console.log(table([switchRow]))
  const result = { switches: switchRow, gapMs: GAP_MS, seconds, rows }
  console.log(`\nwritten to ${await writeResult('switching', result)}`)
  return result
}

if (import.meta.main) {
  await switching()
  process.exit(0)
}
