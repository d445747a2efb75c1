// Question: how much memory does the proxy hold? RSS of the `bluegreen serve` process (VmRSS from /proc) idle,
// with 10,000 concurrent idle keep-alive client connections (each has made one request), after they close, and
// after each of three sustained runs: they should level off (no growth). Target: under 150 MB at 10k connections.
// Before each sample the bench forces a full garbage collection through the inspector (the proxy runs with
// --inspect on loopback for that), so what is left is what the process really holds. The same connections to a
// plain Node http server (bench/upstream.ts) give the floor that Node itself sets.
import { execFileSync } from 'node:child_process'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import {
  autocannonLoad,
  freePort,
  hasCommand,
  type LoadResult,
  REPO,
  rssMiB,
  sleep,
  startBluegreen,
  startFastUpstream,
  startProcess,
  stopProcess,
  table,
  waitForHttp,
  writeResult,
  wrkLoad,
} from './lib.ts'

const CONNECTIONS = Number(process.env.BENCH_MEMORY_CONNECTIONS ?? 10_000)
const RUN_SECONDS = Number(process.env.BENCH_MEMORY_SECONDS ?? 8)
const RUNS = Number(process.env.BENCH_MEMORY_RUNS ?? 3)
const PAUSE_MS = Number(process.env.BENCH_MEMORY_PAUSE_MS ?? 1000)
const BATCH = 500
const TARGET_MIB = 150
// File descriptors beyond the client connections: upstream pool, listeners, stdio, the state file, V8.
const SPARE_FILES = 500
// What node prints on stderr when the bench's inspector client comes and goes.
const INSPECTOR_NOISE = /^(Debugger (attached|ending|listening)|For help, see|Waiting for the debugger)/

/** Just enough of the inspector protocol to force a full GC in another process and read its heap. */
class Inspector {
  private readonly socket: WebSocket
  private next = 0
  private readonly pending = new Map<number, (result: unknown) => void>()

  private constructor(socket: WebSocket) {
    this.socket = socket
    socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data)) as { id?: number; result?: unknown }
      if (message.id !== undefined) this.pending.get(message.id)?.(message.result)
    })
  }

  static async connect(port: number): Promise<Inspector> {
    const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as {
      webSocketDebuggerUrl: string
    }[]
    const socket = new WebSocket(targets[0]!.webSocketDebuggerUrl)
    await new Promise((resolve, reject) => {
      socket.addEventListener('open', resolve)
      socket.addEventListener('error', reject)
    })
    return new Inspector(socket)
  }

  call(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = ++this.next
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`inspector: no answer to ${method}`)), 10_000)
      this.pending.set(id, (result) => {
        clearTimeout(timer)
        this.pending.delete(id)
        resolve(result)
      })
      this.socket.send(JSON.stringify({ id, method, params }))
    })
  }

  /** A full garbage collection, then the JavaScript heap in use, in MiB. */
  async collectGarbage(): Promise<number> {
    await this.call('HeapProfiler.collectGarbage')
    const answer = (await this.call('Runtime.evaluate', {
      expression: 'process.memoryUsage().heapUsed',
    })) as { result: { value: number } }
    return answer.result.value / 1024 / 1024
  }

  close(): void {
    this.socket.close()
  }
}

/** One keep-alive connection that has made one request and had its answer; it then stays open, idle. */
function openIdleConnection(port: number): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    const timer = setTimeout(() => socket.destroy(new Error('no answer within 10 s')), 10_000)
    socket.once('connect', () => socket.write('GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n'))
    socket.once('data', () => {
      clearTimeout(timer)
      resolve(socket)
    })
    socket.once('error', () => {
      clearTimeout(timer)
      resolve(undefined)
    })
  })
}

/** Opens `count` idle keep-alive connections, BATCH at a time. */
async function holdConnections(port: number, count: number): Promise<{ sockets: Socket[]; note: string }> {
  const sockets: Socket[] = []
  let failed = 0
  const openedAt = performance.now()
  for (let opened = 0; opened < count; opened += BATCH) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(BATCH, count - opened) }, () => openIdleConnection(port)),
    )
    for (const socket of batch) {
      if (socket) sockets.push(socket)
      else failed++
    }
  }
  const seconds = (performance.now() - openedAt) / 1000
  return { sockets, note: `opened in ${seconds.toFixed(1)} s, ${failed} failed` }
}

/** Closed with a reset: no TIME_WAIT left behind on 10,000 loopback ports. */
function closeAll(sockets: Socket[] | undefined): void {
  for (const socket of sockets ?? []) socket.resetAndDestroy()
}

export async function memory(): Promise<Record<string, unknown>> {
  // Node raises its own soft limit to the hard one at start-up; a shell it starts inherits that.
  const openFiles = Number(execFileSync('sh', ['-c', 'ulimit -n']).toString().trim())
  const connections = Number.isFinite(openFiles)
    ? Math.min(CONNECTIONS, openFiles - SPARE_FILES)
    : CONNECTIONS
  const reduced =
    connections < CONNECTIONS
      ? `reduced from ${CONNECTIONS} to ${connections}: ulimit -n is ${openFiles} for this process`
      : undefined
  if (reduced) console.log(`note: ${reduced}`)
  const useWrk = await hasCommand('wrk')
  const load = (url: string): Promise<LoadResult> =>
    useWrk ? wrkLoad(url, RUN_SECONDS, 50) : autocannonLoad(url, RUN_SECONDS, 50)
  const rows: Record<string, string | number>[] = []
  const round = (value: number) => Number(value.toFixed(1))
  const sampler =
    (name: string, pid: number, inspector: Inspector) =>
    async (moment: string, note = '', pause = PAUSE_MS) => {
      // The pause first, so that the process has handled whatever just happened (10,000 resets, say).
      await sleep(pause)
      const heap = await inspector.collectGarbage()
      const rss = await rssMiB(pid)
      rows.push({ process: name, moment, 'RSS MiB': round(rss), 'heap used MiB': round(heap), note })
      return rss
    }

  const upstreamPort = await freePort()
  const upstream = await startFastUpstream(upstreamPort)
  const direct = `http://127.0.0.1:${upstreamPort}`
  const inspectPort = await freePort()
  const proxy = await startBluegreen(
    await freePort(),
    {
      admin: { listen: `127.0.0.1:${await freePort()}` },
      pools: { blue: { upstreams: [direct] }, green: { upstreams: [direct] } },
    },
    {
      openFiles: connections + SPARE_FILES,
      nodeArguments: [`--inspect=127.0.0.1:${inspectPort}`, '--inspect-publish-uid=http'],
      quiet: INSPECTOR_NOISE,
    },
  )
  let inspector: Inspector | undefined
  let hold: { sockets: Socket[]; note: string } | undefined
  const ours = { idle: Number.NaN, loaded: Number.NaN, held: 0 }
  try {
    inspector = await Inspector.connect(inspectPort)
    const sample = sampler('bluegreen serve', proxy.child.pid!, inspector)
    ours.idle = await sample('idle (started, one request)')
    hold = await holdConnections(Number(new URL(proxy.url).port), connections)
    ours.held = hold.sockets.length
    ours.loaded = await sample(`${ours.held} idle keep-alive connections`, hold.note)
    closeAll(hold.sockets)
    await sample('after they closed', '', 3 * PAUSE_MS)
    for (let run = 1; run <= RUNS; run++) {
      const result = await load(`${proxy.url}/`)
      const errors = result.errors + result.non2xx
      await sample(
        `after sustained run ${run} (${RUN_SECONDS} s, 50 connections)`,
        `${Math.round(result.requestsPerSecond)} req/s, ${errors} errors`,
      )
    }
  } finally {
    closeAll(hold?.sockets)
    inspector?.close()
    await stopProcess(proxy.child)
    await stopProcess(upstream.child)
  }

  const nodePort = await freePort()
  const nodeInspectPort = await freePort()
  const node = startProcess(
    process.execPath,
    [
      `--inspect=127.0.0.1:${nodeInspectPort}`,
      '--inspect-publish-uid=http',
      join(REPO, 'bench/upstream.ts'),
      String(nodePort),
    ],
    {},
    INSPECTOR_NOISE,
  )
  const floor = { idle: Number.NaN, loaded: Number.NaN, held: 0 }
  let nodeInspector: Inspector | undefined
  let nodeHold: { sockets: Socket[]; note: string } | undefined
  try {
    await waitForHttp(`http://127.0.0.1:${nodePort}/`)
    nodeInspector = await Inspector.connect(nodeInspectPort)
    const sample = sampler('plain Node http server', node.pid!, nodeInspector)
    floor.idle = await sample('idle (started, one request)')
    nodeHold = await holdConnections(nodePort, connections)
    floor.held = nodeHold.sockets.length
    floor.loaded = await sample(`${floor.held} idle keep-alive connections`, nodeHold.note)
  } finally {
    closeAll(nodeHold?.sockets)
    nodeInspector?.close()
    await stopProcess(node)
  }

  const perConnection = (figures: typeof ours) =>
    figures.held > 0 ? `${(((figures.loaded - figures.idle) * 1024) / figures.held).toFixed(1)} KiB` : 'n/a'
  const runs = rows
    .filter((row) => String(row.moment).startsWith('after sustained run'))
    .map((row) => row['RSS MiB'] as number)
  const growth = runs.length >= 2 ? runs.at(-1)! - runs[0]! : Number.NaN
  const met = ours.loaded < TARGET_MIB ? 'met' : 'NOT met'
  const verdict = {
    [`bluegreen RSS at ${ours.held} connections`]: `${ours.loaded.toFixed(1)} MiB (target < ${TARGET_MIB}: ${met})`,
    'per connection': perConnection(ours),
    'plain Node http per connection': perConnection(floor),
    'RSS growth, first sustained run to last': `${growth.toFixed(1)} MiB`,
  }
  console.log(
    `\nmemory: RSS of bluegreen serve (defaults: metrics on) and of a plain Node http server, each sample after a ` +
      `${PAUSE_MS} ms pause and a forced full GC${reduced ? `; connections ${reduced}` : ''}\n`,
  )
  console.log(table(rows))
  console.log('')
  console.log(table([verdict]))
  const result = {
    connections: ours.held,
    reduced,
    runSeconds: RUN_SECONDS,
    rows,
    rssAtConnectionsMiB: ours.loaded,
    growthMiB: growth,
  }
  console.log(`\nwritten to ${await writeResult('memory', result)}`)
  return result
}

if (import.meta.main) {
  await memory()
  process.exit(0)
}
