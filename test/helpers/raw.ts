// Raw TCP for the cases an HTTP client will not produce: malformed upstream responses, exact request bytes.
import { once } from 'node:events'
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net'
import { Worker } from 'node:worker_threads'
import { eventually } from './eventually.ts'

/** A plain TCP server on a free loopback port; close() destroys every socket it accepted. */
export interface TcpServer {
  server: Server
  port: number
  url: string
  /** Connections accepted so far. */
  connections: number
  close(): Promise<void>
}

export async function startTcpServer(onConnection: (socket: Socket) => void): Promise<TcpServer> {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    tcp.connections++
    onConnection(socket)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  const tcp: TcpServer = {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    connections: 0,
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
  return tcp
}

/** Calls back once the socket has received a whole request head (through the blank line). */
export function onRequestHead(socket: Socket, callback: (head: string) => void): void {
  let received = ''
  const onData = (chunk: Buffer) => {
    received += chunk.toString('latin1')
    const end = received.indexOf('\r\n\r\n')
    if (end === -1) return
    socket.off('data', onData)
    callback(received.slice(0, end + 4))
  }
  socket.on('data', onData)
}

/**
 * Sends `request` as raw bytes to the server at `url` and resolves with everything it answers, until it closes
 * the connection: send `Connection: close` (or expect the server to close) so that this ends.
 */
export async function rawRequest(url: string, request: string | Buffer): Promise<string> {
  const { hostname, port } = new URL(url)
  const socket = connect(Number(port), hostname)
  await once(socket, 'connect')
  socket.write(typeof request === 'string' ? Buffer.from(request, 'latin1') : request)
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  await new Promise<void>((resolve) => {
    socket.once('close', () => resolve())
    socket.once('error', () => resolve())
  })
  return Buffer.concat(chunks).toString('latin1')
}

/** The status code and the body of a raw HTTP/1.1 response (the first one, if there are several). */
export function parseRawResponse(raw: string): { status: number; head: string; body: string } {
  const end = raw.indexOf('\r\n\r\n')
  const head = end === -1 ? raw : raw.slice(0, end)
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0)
  return { status, head, body: end === -1 ? '' : raw.slice(end + 4) }
}

/**
 * A loopback listener that never accepts: its thread blocks right after listen() with a backlog of 1, and once
 * that backlog is full (filled here) the kernel drops further SYNs, so a connect to it can only time out. The
 * way to test connect timeouts without touching an unroutable address.
 */
export interface Blackhole {
  port: number
  url: string
  close(): Promise<void>
}

export async function startBlackhole(): Promise<Blackhole> {
  const signal = new Int32Array(new SharedArrayBuffer(4))
  const worker = new Worker(
    `
    const { createServer } = require('node:net')
    const { parentPort, workerData } = require('node:worker_threads')
    const server = createServer()
    server.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
      parentPort.postMessage(server.address().port)
      Atomics.wait(workerData, 0, 0)
      server.close()
    })`,
    { eval: true, workerData: signal },
  )
  const [port] = (await once(worker, 'message')) as [number]
  const fillers: Socket[] = []
  let connected = 0
  for (let i = 0; i < 4; i++) {
    const filler = connect(port, '127.0.0.1')
    filler.on('error', () => {})
    filler.once('connect', () => connected++)
    fillers.push(filler)
  }
  // The first connections land in the backlog; the rest, sent before them, hang in SYN_SENT.
  await eventually(() => connected > 0 && connected < fillers.length, { message: 'the backlog to fill' })
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      for (const filler of fillers) filler.destroy()
      Atomics.store(signal, 0, 1)
      Atomics.notify(signal, 0)
      await once(worker, 'exit')
    },
  }
}

/** How a slow client fared: when the server closed on it (ms after it connected) and what it was answered. */
export interface SlowClient {
  /** Undefined when the server had not closed the connection by the time the client gave up. */
  closedAfterMs: number | undefined
  received: string
}

/**
 * A client that trickles its request out as a slowloris does: `chunks[0]` once connected, then the next chunk
 * every `everyMs`, never more. It waits for the server to close the connection and gives up after `giveUpMs`.
 */
export async function slowClient(
  url: string,
  chunks: readonly string[],
  { everyMs = 100, giveUpMs = 5_000 }: { everyMs?: number; giveUpMs?: number } = {},
): Promise<SlowClient> {
  const { hostname, port } = new URL(url)
  const socket = connect(Number(port), hostname)
  socket.on('error', () => {})
  await once(socket, 'connect')
  const connectedAt = performance.now()
  let received = ''
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString('latin1')
  })
  let next = 0
  const sendNext = () => {
    if (next < chunks.length && socket.writable) socket.write(chunks[next++]!)
  }
  sendNext()
  const ticker = setInterval(sendNext, everyMs)
  const closedAfterMs = await new Promise<number | undefined>((resolve) => {
    const giveUp = setTimeout(() => resolve(undefined), giveUpMs)
    socket.once('close', () => {
      clearTimeout(giveUp)
      resolve(performance.now() - connectedAt)
    })
  })
  clearInterval(ticker)
  socket.destroy()
  return { closedAfterMs, received }
}
