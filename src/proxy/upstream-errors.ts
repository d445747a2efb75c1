// How an upstream failure is named (the `reason` in logs and metrics) and answered.

export type FailureReason =
  | 'refused'
  | 'unreachable'
  | 'connect_timeout'
  | 'header_timeout'
  | 'body_timeout'
  | 'reset'
  | 'protocol'
  | 'other'

export interface Failure {
  reason: FailureReason
  /** 502 for a broken upstream, 504 for a slow one. */
  status: 502 | 504
}

const BY_CODE: Record<string, Failure> = {
  ECONNREFUSED: { reason: 'refused', status: 502 },
  ENOTFOUND: { reason: 'unreachable', status: 502 },
  EAI_AGAIN: { reason: 'unreachable', status: 502 },
  EHOSTUNREACH: { reason: 'unreachable', status: 502 },
  ENETUNREACH: { reason: 'unreachable', status: 502 },
  ECONNRESET: { reason: 'reset', status: 502 },
  EPIPE: { reason: 'reset', status: 502 },
  UND_ERR_SOCKET: { reason: 'reset', status: 502 },
  UND_ERR_CLOSED: { reason: 'reset', status: 502 },
  UND_ERR_DESTROYED: { reason: 'reset', status: 502 },
  ETIMEDOUT: { reason: 'connect_timeout', status: 504 },
  UND_ERR_CONNECT_TIMEOUT: { reason: 'connect_timeout', status: 504 },
  // http-proxy-3's connectTimeout (WebSockets).
  ECONNECT_TIMEOUT: { reason: 'connect_timeout', status: 504 },
  UND_ERR_HEADERS_TIMEOUT: { reason: 'header_timeout', status: 504 },
  UND_ERR_BODY_TIMEOUT: { reason: 'body_timeout', status: 504 },
  UND_ERR_HEADERS_OVERFLOW: { reason: 'protocol', status: 502 },
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: { reason: 'protocol', status: 502 },
  UND_ERR_INFO: { reason: 'protocol', status: 502 },
}

const OTHER: Failure = { reason: 'other', status: 502 }
const PROTOCOL: Failure = { reason: 'protocol', status: 502 }

/**
 * Whether undici refused to build the request from what the client sent (a target such as `*`, two Host
 * headers): the client's fault, answered 400, never retried on another upstream or counted against one.
 */
export function isRejectedRequest(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code
  return code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED'
}

export function classifyUpstreamError(error: unknown): Failure {
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code !== 'string') return OTHER
  // llhttp's parse errors (HPE_INVALID_CONSTANT, HPE_INVALID_HEADER_TOKEN, ...): the upstream sent garbage.
  if (code.startsWith('HPE_')) return PROTOCOL
  return BY_CODE[code] ?? OTHER
}
