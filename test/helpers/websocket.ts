// A minimal WebSocket (RFC 6455) upstream and client handshake, enough for proxy tests without a dependency:
// unfragmented text and binary messages, ping and close. Clients use Node's global WebSocket.
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { type IncomingMessage, type RequestListener, request } from 'node:http'
import type { Duplex } from 'node:stream'
import { startServer, type TestServer } from './servers.ts'

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
const TEXT = 0x1
const BINARY = 0x2
const CLOSE = 0x8
const PING = 0x9
const PONG = 0xa

export function acceptKey(key: string): string {
  return createHash('sha1')
    .update(key + GUID)
    .digest('base64')
}

/** One frame, masked when a client sends it (RFC 6455 5.3), unmasked from a server. */
export function encodeFrame(opcode: number, payload: Buffer, masked: boolean): Buffer {
  const length = payload.length
  const lengthBytes = length < 126 ? 0 : length < 65536 ? 2 : 8
  const head = Buffer.alloc(2 + lengthBytes + (masked ? 4 : 0))
  head[0] = 0x80 | opcode
  head[1] = (masked ? 0x80 : 0) | (length < 126 ? length : length < 65536 ? 126 : 127)
  if (lengthBytes === 2) head.writeUInt16BE(length, 2)
  else if (lengthBytes === 8) head.writeBigUInt64BE(BigInt(length), 2)
  if (!masked) return Buffer.concat([head, payload])
  const mask = randomBytes(4)
  mask.copy(head, 2 + lengthBytes)
  const body = Buffer.alloc(length)
  for (let i = 0; i < length; i++) body[i] = payload[i]! ^ mask[i % 4]!
  return Buffer.concat([head, body])
}

export interface Frame {
  opcode: number
  payload: Buffer
}

/** Feeds bytes in, calls back per complete frame; unmasks what a client sent. */
export function frameReader(onFrame: (frame: Frame) => void): (chunk: Buffer) => void {
  let buffered = Buffer.alloc(0)
  return (chunk) => {
    buffered = Buffer.concat([buffered, chunk])
    for (;;) {
      if (buffered.length < 2) return
      const masked = (buffered[1]! & 0x80) !== 0
      let length = buffered[1]! & 0x7f
      let offset = 2
      if (length === 126) {
        if (buffered.length < 4) return
        length = buffered.readUInt16BE(2)
        offset = 4
      } else if (length === 127) {
        if (buffered.length < 10) return
        length = Number(buffered.readBigUInt64BE(2))
        offset = 10
      }
      const maskAt = offset
      if (masked) offset += 4
      if (buffered.length < offset + length) return
      const payload = Buffer.from(buffered.subarray(offset, offset + length))
      if (masked) for (let i = 0; i < length; i++) payload[i] = payload[i]! ^ buffered[maskAt + (i % 4)]!
      onFrame({ opcode: buffered[0]! & 0x0f, payload })
      buffered = buffered.subarray(offset + length)
    }
  }
}

export interface WsUpstream extends TestServer {
  /** Upgrade requests as this upstream received them. */
  upgrades: { url: string; headers: IncomingMessage['headers'] }[]
  /** WebSockets open right now. */
  readonly open: number
}

export interface WsUpstreamOptions {
  /** Runs before the 101 is written; the handshake waits for it. */
  beforeAccept?: (req: IncomingMessage, socket: Duplex) => Promise<void> | void
  /** Answers plain HTTP requests instead of the default (`name` as the body). */
  onRequest?: RequestListener
}

/**
 * An upstream that echoes every text message prefixed with its name ("blue:hello"), and binary messages as they
 * are. Plain HTTP requests get `name` as the body, or whatever `onRequest` answers.
 */
export async function wsEchoUpstream(name: string, options: WsUpstreamOptions = {}): Promise<WsUpstream> {
  const base = await startServer(
    options.onRequest ??
      ((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': name })
        res.end(name)
      }),
  )
  const sockets = new Set<Duplex>()
  const upstream = Object.defineProperties(base, {
    upgrades: { value: [], enumerable: true },
    open: { get: () => sockets.size, enumerable: true },
  }) as WsUpstream
  base.server.on('upgrade', async (req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => {})
    upstream.upgrades.push({ url: req.url ?? '', headers: req.headers })
    await options.beforeAccept?.(req, socket)
    // A peer that has hung up meanwhile gets no WebSocket (ws's handleUpgrade does the same).
    if (!socket.readable || !socket.writable) {
      socket.destroy()
      return
    }
    const key = req.headers['sec-websocket-key']
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${acceptKey(String(key))}\r\nX-Upstream: ${name}\r\n\r\n`,
    )
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    // A peer that has finished sending is done with the WebSocket (as ws and most servers treat it).
    socket.once('end', () => socket.end())
    socket.on(
      'data',
      frameReader(({ opcode, payload }) => {
        if (opcode === TEXT) socket.write(encodeFrame(TEXT, Buffer.from(`${name}:${payload}`), false))
        else if (opcode === BINARY) socket.write(encodeFrame(BINARY, payload, false))
        else if (opcode === PING) socket.write(encodeFrame(PONG, payload, false))
        else if (opcode === CLOSE) socket.end(encodeFrame(CLOSE, payload.subarray(0, 2), false))
      }),
    )
  })
  return upstream
}

export type UpgradeResult =
  | { kind: 'upgrade'; response: IncomingMessage; socket: Duplex; head: Buffer }
  | { kind: 'response'; response: IncomingMessage; body: string }

/**
 * A WebSocket handshake with node:http, so the test sees the 101's headers (the global WebSocket hides them) or
 * the error response the proxy answered instead.
 */
export async function upgrade(
  url: string,
  path = '/',
  headers: Record<string, string> = {},
): Promise<UpgradeResult> {
  const { hostname, port } = new URL(url)
  // The path as an option, not in a URL, so that it is sent as it is and not normalized.
  const req = request({
    host: hostname,
    port,
    path,
    headers: {
      connection: 'Upgrade',
      upgrade: 'websocket',
      'sec-websocket-key': randomBytes(16).toString('base64'),
      'sec-websocket-version': '13',
      ...headers,
    },
  })
  req.end()
  return new Promise((resolve, reject) => {
    req.once('error', reject)
    req.once('upgrade', (response: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', () => {})
      resolve({ kind: 'upgrade', response, socket, head })
    })
    req.once('response', async (response: IncomingMessage) => {
      let body = ''
      for await (const chunk of response) body += chunk
      resolve({ kind: 'response', response, body })
    })
  })
}

/** Opens a WebSocket with Node's global client and resolves once it is open. */
export async function openWebSocket(url: string): Promise<WebSocket> {
  const socket = new WebSocket(url)
  await new Promise<void>((resolve, reject) => {
    socket.addEventListener('open', () => resolve(), { once: true })
    socket.addEventListener('error', () => reject(new Error(`WebSocket to ${url} failed`)), { once: true })
  })
  return socket
}

/** Sends a text message and resolves with the next message the socket receives. */
export async function roundTrip(socket: WebSocket, message: string): Promise<string> {
  const reply = new Promise<string>((resolve, reject) => {
    socket.addEventListener('message', (event) => resolve(String(event.data)), { once: true })
    socket.addEventListener('close', () => reject(new Error('the WebSocket closed')), { once: true })
  })
  socket.send(message)
  return reply
}

/** Closes a WebSocket and resolves once it is closed. */
export async function closeWebSocket(socket: WebSocket): Promise<void> {
  if (socket.readyState === WebSocket.CLOSED) return
  const closed = once(socket as unknown as EventTarget, 'close')
  socket.close()
  await closed
}
