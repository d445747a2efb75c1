// Question: how long from a committed change in Redis until the last of 4 replicas has applied it?
// 4 `bluegreen serve` replicas on one redis-server; the bench commits 200 changes through the same Lua
// compare-and-set the admin API uses (a RedisStateStore of its own) and listens to the replicas' acknowledgements.
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { Redis } from 'ioredis'
import { allTo, type Color } from '../src/colors.ts'
import { buildConfig } from '../src/config/schema.ts'
import { silentLogger } from '../src/log.ts'
import { acknowledgementChannel, parseAcknowledgement } from '../src/state/redis-replicas.ts'
import { RedisStateStore } from '../src/state/redis-store.ts'
import {
  freePort,
  median,
  startBluegreen,
  startUpstream,
  stopProcess,
  table,
  waitForHttp,
  writeResult,
} from './lib.ts'

const REPLICAS = 4
const CHANGES = Number(process.env.BENCH_CHANGES ?? 200)

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

export async function propagation(): Promise<Record<string, unknown>> {
  const redisPort = await freePort()
  const redis: ChildProcess = spawn(
    'redis-server',
    ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  )
  const upstreamPort = await freePort()
  const upstream = await startUpstream(upstreamPort)
  const key = `bluegreen:bench:${process.pid}`
  const redisUrl = `redis://127.0.0.1:${redisPort}`
  await new Promise((resolve) => setTimeout(resolve, 200))
  const replicas: { child: ChildProcess; url: string }[] = []
  const listener = new Redis(redisPort, '127.0.0.1')
  const config = buildConfig(
    {
      pools: {
        blue: { upstreams: [`http://127.0.0.1:${upstreamPort}`] },
        green: { upstreams: [`http://127.0.0.1:${upstreamPort}`] },
      },
      state: { store: 'redis', redis: { url: redisUrl, key } },
    },
    {},
  )
  const writer = new RedisStateStore({
    config: config.state.redis!,
    initial: 'blue',
    logger: silentLogger(),
    replicaId: 'bench-writer',
  })
  try {
    for (let i = 0; i < REPLICAS; i++) {
      replicas.push(
        await startBluegreen(await freePort(), {
          admin: { listen: `127.0.0.1:${await freePort()}` },
          pools: {
            blue: { upstreams: [`http://127.0.0.1:${upstreamPort}`] },
            green: { upstreams: [`http://127.0.0.1:${upstreamPort}`] },
          },
          state: { store: 'redis', redis: { url: redisUrl, key } },
          log: { level: 'warn' },
        }),
      )
    }
    for (const replica of replicas) await waitForHttp(`${replica.url}/`)
    await writer.start()

    const acks = new Map<number, number[]>()
    const waiting = new Map<number, () => void>()
    await listener.subscribe(acknowledgementChannel(key))
    listener.on('message', (_channel: string, message: string) => {
      const ack = parseAcknowledgement(message)
      if (!ack) return
      const list = acks.get(ack.generation) ?? []
      list.push(ack.appliedAt)
      acks.set(ack.generation, list)
      if (list.length === REPLICAS) waiting.get(ack.generation)?.()
    })

    const applyLatency: number[] = []
    const roundTrip: number[] = []
    for (let i = 0; i < CHANGES; i++) {
      const to: Color = i % 2 === 0 ? 'green' : 'blue'
      const startedAt = performance.timeOrigin + performance.now()
      let allApplied!: () => void
      const done = new Promise<void>((resolve) => {
        allApplied = resolve
      })
      const generation = writer.current()!.generation + 1
      waiting.set(generation, allApplied)
      const state = await writer.change(
        { active: to, weights: allTo(to), updatedBy: 'bench', reason: 'bench' },
        generation - 1,
      )
      await Promise.race([
        done,
        new Promise((_, reject) =>
          setTimeout(
            () => reject(new Error(`generation ${state.generation} not applied by all replicas in 5 s`)),
            5000,
          ),
        ),
      ])
      const receivedAt = performance.timeOrigin + performance.now()
      const applied = acks.get(state.generation)!
      applyLatency.push(Math.max(...applied) - startedAt)
      roundTrip.push(receivedAt - startedAt)
      waiting.delete(generation)
    }
    const summarize = (values: number[]) => {
      const sorted = [...values].sort((a, b) => a - b)
      return { p50: median(sorted), p99: percentile(sorted, 99), max: sorted[sorted.length - 1]! }
    }
    const applied = summarize(applyLatency)
    const acked = summarize(roundTrip)
    const rows = [
      {
        // Timestamps from four processes against the bench's: comparable only to within about a millisecond.
        measure: 'commit -> last of 4 replicas applied (cross-process clocks)',
        'p50 ms': applied.p50,
        'p99 ms': applied.p99,
        'max ms': applied.max,
      },
      {
        // One clock, and an upper bound: it adds each replica's acknowledgement on top of the apply.
        measure: 'commit -> all 4 acknowledgements received (one clock)',
        'p50 ms': acked.p50,
        'p99 ms': acked.p99,
        'max ms': acked.max,
      },
    ]
    console.log(`\npropagation: ${CHANGES} switches, ${REPLICAS} replicas on one redis-server (loopback)\n`)
    console.log(table(rows))
    const result = { changes: CHANGES, replicas: REPLICAS, applied, acknowledged: acked }
    console.log(`\nwritten to ${await writeResult('propagation', result)}`)
    return result
  } finally {
    await writer.close()
    listener.disconnect()
    for (const replica of replicas) await stopProcess(replica.child)
    await stopProcess(upstream)
    redis.kill('SIGKILL')
    await once(redis, 'exit')
  }
}

if (import.meta.main) await propagation()
