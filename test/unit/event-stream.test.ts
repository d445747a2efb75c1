import { createServer, get, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { EventStream } from '../../src/admin/event-stream.ts'
import { eventually } from '../helpers/eventually.ts'

// The stream's replay and keep-alive, over a real socket, with a short memory and a quick keep-alive.

const servers: Server[] = []

afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  }
})

async function serve(events: EventStream): Promise<string> {
  const server = createServer((req, res) => events.serve(req, res))
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
}

/** Everything the stream has sent so far, as text. */
function read(url: string, lastEventId?: string): () => string {
  let text = ''
  get(url, { headers: lastEventId === undefined ? {} : { 'last-event-id': lastEventId } }, (res) => {
    res.setEncoding('utf8')
    res.on('data', (chunk: string) => {
      text += chunk
    })
  })
  return () => text
}

describe('EventStream', () => {
  it('replays what a client missed while it still has it, and says resync once it has not', async () => {
    const events = new EventStream({ keep: 3, processTag: 'p1' })
    const url = await serve(events)
    for (let n = 1; n <= 5; n++) events.publish('note', { n })
    // Kept: 3, 4, 5. Last seen 2: nothing missed.
    const resumed = read(url, 'p1-2')
    await eventually(() => resumed().includes('id: p1-5\n'), { message: 'the replay' })
    expect(resumed()).not.toContain('id: p1-2\n')
    expect(resumed()).toContain('id: p1-3\nevent: note\ndata: {"n":3}\n\n')
    // Last seen 1: event 2 is gone.
    const behind = read(url, 'p1-1')
    await eventually(() => behind().includes('event: resync'), { message: 'the resync' })
    expect(behind()).toContain(
      'id: p1-5\nevent: resync\ndata: {"lastEventId":"p1-1","reason":"events were missed"}\n\n',
    )
    expect(behind()).not.toContain('event: note')
    // An id from another process (a restart, a sibling worker): its count means nothing here.
    const elsewhere = read(url, 'p0-4')
    await eventually(() => elsewhere().includes('event: resync'), {
      message: 'the resync for another process',
    })
    expect(elsewhere()).toContain(
      '"reason":"another proxy process gave that id (a restart, or another worker)"',
    )
    expect(elsewhere()).not.toContain('event: note')
    // Both hear what comes next.
    events.publish('note', { n: 6 })
    await eventually(() => resumed().includes('id: p1-6\n') && behind().includes('id: p1-6\n'), {
      message: 'event 6',
    })
    events.endStreams()
  })

  it('sends a keep-alive comment to an idle stream and stops once the last client has gone', async () => {
    const events = new EventStream({ keepAliveMs: 20 })
    const url = await serve(events)
    const idle = read(url)
    await eventually(() => idle().includes(': keep-alive\n\n'), { message: 'a keep-alive' })
    expect(events.clients).toBe(1)
    servers[0]!.closeAllConnections()
    await eventually(() => events.clients === 0, { message: 'the client forgotten' })
  })
})
