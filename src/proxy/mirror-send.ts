import { Agent } from 'undici'
import type { MirrorConfig } from '../config/types.ts'
import type { CapturedResponse } from '../mirror/compare.ts'
import type { Upstream } from '../routing/upstream.ts'
import { MIRROR_HEADER } from './headers.ts'

// Sending one request of a mirrored copy (the copy to the other color, or the noise sample to the live one) on the
// copies' own connections, and capturing its answer up to the limit. Never on the request path: sent once the
// client's request has been read.

export interface CopyRequest {
  method: string
  path: string
  /** The live request's headers as name, value pairs; the mirror header is added. */
  headers: readonly string[]
  body: Buffer | null
}

/** The copies' own connections and timeouts: a slow idle color ties up these, never the live pools. */
export function copiesAgent(config: MirrorConfig): Agent {
  return new Agent({
    connections: config.maxInFlight,
    pipelining: 1,
    headersTimeout: config.timeout,
    bodyTimeout: config.timeout,
    keepAliveTimeout: 4_000,
    connect: { timeout: config.timeout, noDelay: true },
  })
}

/** One request of a copy, its answer captured (bounded), or the error; never rejects. */
export async function sendCopy(
  agent: Agent,
  upstream: Upstream,
  request: CopyRequest,
  config: MirrorConfig,
): Promise<CapturedResponse | Error> {
  try {
    const response = await agent.request({
      origin: upstream.origin,
      path: request.path,
      method: request.method as 'GET',
      headers: [...request.headers, MIRROR_HEADER, '1'],
      body: request.body,
      signal: AbortSignal.timeout(config.timeout),
    })
    const chunks: Buffer[] = []
    let size = 0
    let truncated = false
    const limit = config.compare.maxCaptureBytes
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      if (size + chunk.length > limit) {
        chunks.push(chunk.subarray(0, limit - size))
        size = limit
        truncated = true
        break
      }
      chunks.push(chunk)
      size += chunk.length
    }
    return {
      status: response.statusCode,
      headers: response.headers,
      body: Buffer.concat(chunks, size),
      truncated,
    }
  } catch (error) {
    const failure = error as Error
    return failure.name === 'TimeoutError' ? new Error(`no answer within ${config.timeout} ms`) : failure
  }
}
