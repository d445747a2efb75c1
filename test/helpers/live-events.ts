import { type IncomingMessage, request } from 'node:http'
import { eventually } from './eventually.ts'

// GET /events/stream read as `curl -N` reads it: a plain HTTP client on a real socket, frames parsed as they come.

export interface LiveFrame {
  id?: string
  event?: string
  data?: unknown
}

export interface LiveEvents {
  frames: LiveFrame[]
  /** The data of every frame of one kind so far. */
  of<T = Record<string, unknown>>(kind: string): T[]
  /** Waits for a frame of `kind` whose data passes `match`. */
  next<T = Record<string, unknown>>(kind: string, match: (data: T) => boolean, timeout?: number): Promise<T>
  close(): void
}

export function followEvents(admin: string): Promise<LiveEvents> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${admin}/events/stream`,
      { headers: { accept: 'text/event-stream' } },
      (response) => {
        const { frames } = collectFrames(response)
        response.on('error', () => {})
        const of = <T>(kind: string) =>
          frames.filter((frame) => frame.event === kind).map((frame) => frame.data as T)
        resolve({
          frames,
          of,
          next: <T>(kind: string, match: (data: T) => boolean, timeout = 10_000) =>
            eventually(() => of<T>(kind).find(match), {
              timeout,
              interval: 20,
              message: `a "${kind}" live event from ${admin}; got ${JSON.stringify(frames)}`,
            }),
          close: () => req.destroy(),
        })
      },
    )
    req.on('error', reject)
    req.end()
  })
}

/**
 * Parses the stream's frames as they arrive into `frames`; `text` is what has come of the next one. A block of
 * comments only (the greeting, keep-alives) is no event.
 */
export function collectFrames(response: IncomingMessage): { frames: LiveFrame[]; text: () => string } {
  let text = ''
  const frames: LiveFrame[] = []
  response.setEncoding('utf8')
  response.on('data', (chunk: string) => {
    text += chunk
    for (let end = text.indexOf('\n\n'); end !== -1; end = text.indexOf('\n\n')) {
      const frame = parseFrame(text.slice(0, end))
      if (frame.event !== undefined) frames.push(frame)
      text = text.slice(end + 2)
    }
  })
  return { frames, text: () => text }
}

function parseFrame(block: string): LiveFrame {
  const frame: LiveFrame = {}
  for (const line of block.split('\n')) {
    if (line.startsWith('id: ')) frame.id = line.slice(4)
    else if (line.startsWith('event: ')) frame.event = line.slice(7)
    else if (line.startsWith('data: ')) frame.data = JSON.parse(line.slice(6))
  }
  return frame
}
