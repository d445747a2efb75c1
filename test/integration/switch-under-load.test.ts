import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { Agent, type IncomingMessage, request, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { startProxy, startServer, type TestProxy, type TestServer } from '../helpers/servers.ts'

// Everything here (client, proxy, upstreams) runs in this process, so one clock, performance.now(), orders
// the client's start of a request, the moment an upstream received it and the moment a switch was answered.

type Color = 'blue' | 'green'

interface Switch {
  to: Color
  sentAt: number
  answeredAt: number
}

interface Sample {
  startedAt: number
  endedAt: number
  /** When the upstream got the request: the proxy had routed it before then. */
  receivedAt: number
  status: number
  color: string | undefined
  socket: number
  slow: boolean
}

/** An upstream that names its color and when it received the request; /slow answers after 100 ms and /held when released. */
function colorUpstream(color: Color) {
  const held: ServerResponse[] = []
  let heldCount = 0
  const answer = (res: ServerResponse, receivedAt: number) => {
    if (res.destroyed) return
    res.writeHead(200, {
      'content-type': 'text/plain',
      'x-upstream': color,
      'x-received-at': String(receivedAt),
    })
    res.end(color)
  }
  const upstream = {
    server: undefined as TestServer | undefined,
    heldCount: () => heldCount,
    release() {
      for (const res of held.splice(0)) answer(res, 0)
    },
    async start() {
      upstream.server = await startServer((req: IncomingMessage, res: ServerResponse) => {
        const receivedAt = performance.now()
        req.resume()
        if (req.url?.startsWith('/slow')) setTimeout(() => answer(res, receivedAt), 100)
        else if (req.url?.startsWith('/held')) {
          heldCount++
          held.push(res)
        } else answer(res, receivedAt)
      })
      return upstream
    },
  }
  return upstream
}

const socketIds = new WeakMap<Socket, number>()
let nextSocketId = 0

function get(agent: Agent, url: string): Promise<Omit<Sample, 'startedAt' | 'endedAt' | 'slow'>> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent })
    let socket = -1
    req.on('socket', (raw: Socket) => {
      if (!socketIds.has(raw)) socketIds.set(raw, nextSocketId++)
      socket = socketIds.get(raw)!
    })
    req.on('error', reject)
    req.on('response', (res) => {
      res.resume()
      res.on('error', reject)
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          color: res.headers['x-bluegreen-color'] as string | undefined,
          receivedAt: Number(res.headers['x-received-at']),
          socket,
        }),
      )
    })
    req.end()
  })
}

/**
 * The colors a request may have been routed to, given when it started and when its upstream received it, and
 * the last switch surely applied by then (-1: none).
 */
function allowedColors(sample: Sample, switches: readonly Switch[]): { allowed: Set<Color>; after: number } {
  // Switch j surely applied before routing if it was answered before the request started; surely not if it was
  // sent after the upstream had the request. Index -1 is the initial state (blue).
  let surely = -1
  let possibly = -1
  switches.forEach((change, index) => {
    if (change.answeredAt < sample.startedAt) surely = index
    if (change.sentAt < sample.receivedAt) possibly = index
  })
  const allowed = new Set<Color>()
  for (let index = surely; index <= possibly; index++) allowed.add(index < 0 ? 'blue' : switches[index]!.to)
  return { allowed, after: surely }
}

describe('switching under load', () => {
  let blue: ReturnType<typeof colorUpstream>
  let green: ReturnType<typeof colorUpstream>
  let proxy: TestProxy
  let stateDir: string | undefined
  beforeAll(async () => {
    blue = await colorUpstream('blue').start()
    green = await colorUpstream('green').start()
    // The state file on tmpfs where there is one: this test is about the request path, and a switch's fsync on
    // a busy disk (other test files running) can take most of a second.
    stateDir = await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'bluegreen-load-'))
    proxy = await startProxy(
      { blue: [blue.server!.url], green: [green.server!.url] },
      { state: { path: join(stateDir, 'state.json') } },
    )
  })
  afterAll(async () => {
    blue?.release()
    green?.release()
    await proxy?.close()
    await blue?.server?.close()
    await green?.server?.close()
    if (stateDir) await rm(stateDir, { recursive: true, force: true })
  })

  it('loses no request and serves the new color on every keep-alive connection right after each switch', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 32 })
    const samples: Sample[] = []
    const failures: unknown[] = []
    const switches: Switch[] = []
    let stop = false
    const deadline = performance.now() + 15_000
    const maxRequests = 60_000

    const loop = async (worker: number) => {
      for (let i = 0; !stop && performance.now() < deadline && samples.length < maxRequests; i++) {
        // One request in sixteen is slow, so that every switch finds some in flight.
        const slow = (worker + i) % 16 === 0
        const startedAt = performance.now()
        try {
          const answer = await get(agent, `${proxy.url}/${slow ? 'slow' : 'fast'}?w=${worker}&i=${i}`)
          samples.push({ ...answer, startedAt, endedAt: performance.now(), slow })
        } catch (error) {
          failures.push(error)
        }
      }
    }

    const switcher = async () => {
      try {
        for (let round = 0; round < 20; round++) {
          const seen = samples.length
          await eventually(() => samples.length >= seen + 200 || failures.length > 0, {
            timeout: 8000,
            message: 'load between two switches',
          })
          const to: Color = round % 2 === 0 ? 'green' : 'blue'
          const sentAt = performance.now()
          const reply = await adminPost(proxy.admin, '/switch', { to, reason: `load round ${round}` })
          const answeredAt = performance.now()
          expect(reply.status).toBe(200)
          expect(reply.body.active).toBe(to)
          switches.push({ to, sentAt, answeredAt })
        }
        const seen = samples.length
        await eventually(() => samples.length >= seen + 200, {
          timeout: 8000,
          message: 'load after the last switch',
        })
      } finally {
        stop = true
      }
    }

    try {
      await Promise.all([switcher(), ...Array.from({ length: 32 }, (_, worker) => loop(worker))])
    } finally {
      agent.destroy()
    }

    expect(failures).toEqual([])
    expect(switches).toHaveLength(20)
    expect(samples.length).toBeGreaterThan(20 * 200)

    // Requests checked exactly: started after switch j was answered and received upstream before j+1 was sent.
    const exactAfter = new Array<number>(switches.length + 1).fill(0)
    let spanning = 0
    const wrong: string[] = []
    for (const sample of samples) {
      expect(sample.status).toBe(200)
      const { allowed, after } = allowedColors(sample, switches)
      if (!allowed.has(sample.color as Color)) {
        wrong.push(`${sample.color} at ${sample.startedAt.toFixed(1)} (allowed ${[...allowed].join('/')})`)
      }
      if (allowed.size === 1) exactAfter[after + 1]!++
      // In flight when a switch was made: routed before it was sent, answered after (by the check above, on
      // the color it was routed to).
      if (switches.some((change) => sample.receivedAt < change.sentAt && sample.endedAt > change.sentAt))
        spanning++
    }
    expect(wrong).toEqual([])
    // The strict check covers every switch with many requests, so it is not vacuous (requests that overlap a
    // switch's own few milliseconds may go either way).
    expect(Math.min(...exactAfter)).toBeGreaterThanOrEqual(50)
    // Requests were in flight at switches and still completed on the color they were routed to.
    expect(spanning).toBeGreaterThanOrEqual(20)

    // Keep-alive: 32 connections at most, and each carried requests across several switches.
    // (The number of switches answered before a request started tells which interval it ran in.)
    const intervals = new Map<number, Set<number>>()
    for (const sample of samples) {
      const interval = switches.filter((change) => change.answeredAt < sample.startedAt).length
      const seen = intervals.get(sample.socket) ?? new Set<number>()
      seen.add(interval)
      intervals.set(sample.socket, seen)
    }
    expect(intervals.size).toBeLessThanOrEqual(32)
    expect(Math.min(...[...intervals.values()].map((seen) => seen.size))).toBeGreaterThan(5)
  })

  it('completes requests in flight on the color they started on while new ones go to the new color', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 16 })
    try {
      const warm = await Promise.all(Array.from({ length: 16 }, () => get(agent, `${proxy.url}/fast`)))
      const before = warm[0]!.color as Color
      const after: Color = before === 'blue' ? 'green' : 'blue'
      const upstream = before === 'blue' ? blue : green
      const heldBefore = upstream.heldCount()

      // Eight requests on keep-alive connections reach the old color's upstream, which holds them.
      const inFlight = Array.from({ length: 8 }, () => get(agent, `${proxy.url}/held`))
      await eventually(() => upstream.heldCount() === heldBefore + 8, {
        message: 'the held requests to arrive',
      })

      const reply = await adminPost(proxy.admin, '/switch', { to: after })
      expect(reply.status).toBe(200)
      // New requests, on the remaining keep-alive connections, go to the new color at once.
      const fresh = await Promise.all(Array.from({ length: 8 }, () => get(agent, `${proxy.url}/fast`)))
      for (const answer of fresh) expect(answer.color).toBe(after)

      upstream.release()
      for (const answer of await Promise.all(inFlight)) {
        expect(answer.status).toBe(200)
        expect(answer.color).toBe(before)
      }
    } finally {
      agent.destroy()
    }
  })
})
