import { connect as connectTls, type TLSSocket } from 'node:tls'

// A raw HTTP/2 client that writes frames as given, for the floods a well-behaved client (node:http2) never sends:
// streams opened and reset at once (rapid reset), endless CONTINUATION frames, oversized header lists.

export const FRAME = {
  DATA: 0x0,
  HEADERS: 0x1,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PING: 0x6,
  GOAWAY: 0x7,
  CONTINUATION: 0x9,
} as const

export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const

/** HTTP/2 error codes (RFC 9113 7). */
export const ERROR = { NO_ERROR: 0x0, PROTOCOL_ERROR: 0x1, CANCEL: 0x8, ENHANCE_YOUR_CALM: 0xb } as const

export interface Frame {
  type: number
  flags: number
  stream: number
  payload: Buffer
}

export function frame(
  type: number,
  flags: number,
  stream: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const header = Buffer.alloc(9)
  header.writeUIntBE(payload.length, 0, 3)
  header[3] = type
  header[4] = flags
  header.writeUInt32BE(stream & 0x7fffffff, 5)
  return Buffer.concat([header, payload])
}

/** An HPACK integer with an n-bit prefix (RFC 7541 5.1). */
function hpackInteger(value: number, prefixBits: number, firstByte = 0): Buffer {
  const max = (1 << prefixBits) - 1
  if (value < max) return Buffer.from([firstByte | value])
  const bytes = [firstByte | max]
  let rest = value - max
  while (rest >= 128) {
    bytes.push((rest % 128) + 128)
    rest = Math.floor(rest / 128)
  }
  bytes.push(rest)
  return Buffer.from(bytes)
}

function hpackString(text: string): Buffer {
  const bytes = Buffer.from(text)
  return Buffer.concat([hpackInteger(bytes.length, 7), bytes])
}

/** A header block of literal fields without indexing (RFC 7541 6.2.2): no dynamic table to keep in step. */
export function headerBlock(headers: readonly [string, string][]): Buffer {
  return Buffer.concat(
    headers.flatMap(([name, value]) => [Buffer.from([0x00]), hpackString(name), hpackString(value)]),
  )
}

export function requestHeaders(path = '/', extra: [string, string][] = []): Buffer {
  return headerBlock([
    [':method', 'GET'],
    [':scheme', 'https'],
    [':authority', 'localhost'],
    [':path', path],
    ...extra,
  ])
}

export function rstStream(stream: number, code: number = ERROR.CANCEL): Buffer {
  const payload = Buffer.alloc(4)
  payload.writeUInt32BE(code)
  return frame(FRAME.RST_STREAM, 0, stream, payload)
}

export interface RawHttp2 {
  socket: TLSSocket
  frames: Frame[]
  /** Whether the server closed the connection (or it failed). */
  closed(): boolean
  /** The GOAWAY's error code, when one came. */
  goaway(): number | undefined
  /** The server's SETTINGS as id -> value. */
  settings(): Map<number, number>
  write(data: Buffer): boolean
  destroy(): void
}

/** A TLS connection that negotiated h2, with the preface and an empty SETTINGS sent; incoming frames are kept. */
export async function rawHttp2(port: number, ca: string): Promise<RawHttp2> {
  const socket = connectTls({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['h2'] })
  const frames: Frame[] = []
  let closed = false
  let buffered = Buffer.alloc(0)
  socket.on('error', () => {
    closed = true
  })
  socket.on('close', () => {
    closed = true
  })
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk])
    while (buffered.length >= 9) {
      const length = buffered.readUIntBE(0, 3)
      if (buffered.length < 9 + length) break
      const received: Frame = {
        type: buffered[3]!,
        flags: buffered[4]!,
        stream: buffered.readUInt32BE(5) & 0x7fffffff,
        payload: buffered.subarray(9, 9 + length),
      }
      buffered = buffered.subarray(9 + length)
      frames.push(received)
      if (received.type === FRAME.SETTINGS && !(received.flags & FLAG.ACK) && socket.writable)
        socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0))
    }
  })
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve())
    socket.once('error', reject)
  })
  if (socket.alpnProtocol !== 'h2') throw new Error(`ALPN chose ${socket.alpnProtocol}, not h2`)
  socket.write(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'))
  socket.write(frame(FRAME.SETTINGS, 0, 0))
  return {
    socket,
    frames,
    closed: () => closed,
    goaway: () => frames.find((received) => received.type === FRAME.GOAWAY)?.payload.readUInt32BE(4),
    settings: () => {
      const values = new Map<number, number>()
      const settings = frames.find(
        (received) => received.type === FRAME.SETTINGS && !(received.flags & FLAG.ACK),
      )
      for (let at = 0; settings && at + 6 <= settings.payload.length; at += 6)
        values.set(settings.payload.readUInt16BE(at), settings.payload.readUInt32BE(at + 2))
      return values
    },
    write: (data) => (socket.writable ? socket.write(data) : false),
    destroy: () => socket.destroy(),
  }
}
