import { once } from 'node:events'
import { createConnection, createServer, type Socket } from 'node:net'

/**
 * A TCP relay in front of a server (a redis-server), for one client (a proxy replica) to connect through, so the
 * test can partition that one client from the server while the server and every other client carry on.
 *
 * A cut is a black hole, as a network partition is: the connections stay open and new ones are accepted, but not
 * a byte goes either way, so the client notices only through its own timeouts. Healing closes what the cut held
 * (as a partition long enough to matter ends: the client reconnects) and relays new connections again.
 */
export interface Relay {
  port: number
  /** redis://127.0.0.1:<port>, for a config's state.redis.url. */
  url: string
  cut(): void
  heal(): void
  close(): Promise<void>
}

export async function startRelay(targetPort: number): Promise<Relay> {
  let cut = false
  const held = new Set<Socket>()
  const pairs = new Set<[Socket, Socket]>()

  const hold = (socket: Socket) => {
    held.add(socket)
    socket.on('error', () => {})
    socket.once('close', () => held.delete(socket))
  }
  const relay = (client: Socket) => {
    const server = createConnection({ port: targetPort, host: '127.0.0.1' })
    const pair: [Socket, Socket] = [client, server]
    pairs.add(pair)
    const end = () => {
      pairs.delete(pair)
      client.destroy()
      server.destroy()
    }
    for (const socket of pair) {
      socket.on('error', end)
      socket.once('close', end)
    }
    client.pipe(server)
    server.pipe(client)
  }
  const listener = createServer((client) => (cut ? hold(client) : relay(client)))
  listener.listen(0, '127.0.0.1')
  await once(listener, 'listening')
  const port = (listener.address() as { port: number }).port

  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    cut: () => {
      cut = true
      for (const [client, server] of pairs) {
        client.unpipe(server)
        server.unpipe(client)
        // Whatever either side sends from now on stays in the relay.
        client.pause()
        server.pause()
        hold(client)
        hold(server)
      }
      pairs.clear()
    },
    heal: () => {
      cut = false
      for (const socket of held) socket.destroy()
      held.clear()
    },
    close: async () => {
      for (const socket of held) socket.destroy()
      for (const [client, server] of pairs) {
        client.destroy()
        server.destroy()
      }
      await new Promise<void>((resolve) => listener.close(() => resolve()))
    },
  }
}
