// A webhook receiver on a real socket: records every request it gets, and answers the status it is told to.

import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

export interface Received {
  headers: IncomingHttpHeaders
  body: string
  /** When it arrived (ms since the epoch). */
  at: number
}

export interface Receiver {
  url: string
  received: Received[]
  /** The status it answers; change it at any time. */
  status: number
  /** While true, requests are recorded and never answered (a receiver that hangs). */
  hold: boolean
  /** The bodies received, parsed. */
  bodies<T = Record<string, unknown>>(): T[]
  close(): Promise<void>
}

/** `host` and `port`: to listen where an address refused connections until now. */
export async function startReceiver(
  options: { host?: string; port?: number; status?: number } = {},
): Promise<Receiver> {
  const sockets = new Set<Socket>()
  const receiver = {
    received: [] as Received[],
    status: options.status ?? 204,
    hold: false,
  } as Receiver
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    receiver.received.push({ headers: req.headers, body: Buffer.concat(chunks).toString(), at: Date.now() })
    if (!receiver.hold) res.writeHead(receiver.status).end()
  })
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  const host = options.host ?? '127.0.0.1'
  server.listen(options.port ?? 0, host)
  await once(server, 'listening')
  receiver.url = `http://${host}:${(server.address() as AddressInfo).port}/hook`
  receiver.bodies = <T>() => receiver.received.map((request) => JSON.parse(request.body) as T)
  receiver.close = async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  }
  return receiver
}
