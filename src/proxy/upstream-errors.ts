// How an upstream failure is named (the `reason` in logs and metrics) and answered.

export type FailureReason =
  | 'refused'
  | 'unreachable'
  | 'connect_timeout'
  | 'header_timeout'
  | 'body_timeout'
  | 'reset'
  | 'protocol'
  | 'tls'
  | 'other'

export interface Failure {
  reason: FailureReason
  /** A broken upstream (502) or a slow one (504). */
  code: 'BG_UPSTREAM_UNREACHABLE' | 'BG_UPSTREAM_TIMEOUT'
}

const BROKEN = 'BG_UPSTREAM_UNREACHABLE'
const SLOW = 'BG_UPSTREAM_TIMEOUT'

const BY_CODE: Record<string, Failure> = {
  ECONNREFUSED: { reason: 'refused', code: BROKEN },
  ENOTFOUND: { reason: 'unreachable', code: BROKEN },
  EAI_AGAIN: { reason: 'unreachable', code: BROKEN },
  EHOSTUNREACH: { reason: 'unreachable', code: BROKEN },
  ENETUNREACH: { reason: 'unreachable', code: BROKEN },
  ECONNRESET: { reason: 'reset', code: BROKEN },
  EPIPE: { reason: 'reset', code: BROKEN },
  UND_ERR_SOCKET: { reason: 'reset', code: BROKEN },
  UND_ERR_CLOSED: { reason: 'reset', code: BROKEN },
  UND_ERR_DESTROYED: { reason: 'reset', code: BROKEN },
  ETIMEDOUT: { reason: 'connect_timeout', code: SLOW },
  UND_ERR_CONNECT_TIMEOUT: { reason: 'connect_timeout', code: SLOW },
  // http-proxy-3's connectTimeout (WebSockets).
  ECONNECT_TIMEOUT: { reason: 'connect_timeout', code: SLOW },
  UND_ERR_HEADERS_TIMEOUT: { reason: 'header_timeout', code: SLOW },
  UND_ERR_BODY_TIMEOUT: { reason: 'body_timeout', code: SLOW },
  UND_ERR_HEADERS_OVERFLOW: { reason: 'protocol', code: BROKEN },
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: { reason: 'protocol', code: BROKEN },
  UND_ERR_INFO: { reason: 'protocol', code: BROKEN },
}

const OTHER: Failure = { reason: 'other', code: BROKEN }
const PROTOCOL: Failure = { reason: 'protocol', code: BROKEN }

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
  return BY_CODE[code] ?? (isTlsFailure(code) ? TLS : OTHER)
}

/**
 * A failed TLS handshake or certificate check: OpenSSL's alerts and errors (ERR_SSL_*: an unknown CA, a client
 * certificate the upstream wanted), Node's (ERR_TLS_*: the name does not match) and the certificate verification
 * results (UNABLE_TO_VERIFY_LEAF_SIGNATURE, SELF_SIGNED_CERT_IN_CHAIN, CERT_HAS_EXPIRED, ...).
 */
export function isTlsFailure(code: string): boolean {
  return (
    code.startsWith('ERR_SSL_') ||
    code.startsWith('ERR_TLS_') ||
    code === 'EPROTO' ||
    CERTIFICATE_CODES.test(code)
  )
}

const CERTIFICATE_CODES =
  /^(?:UNABLE_TO_|CERT_|SELF_SIGNED_|DEPTH_ZERO_|HOSTNAME_MISMATCH|INVALID_CA|PATH_LENGTH_EXCEEDED|INVALID_PURPOSE|CERT_UNTRUSTED|CERT_REJECTED)/

const TLS: Failure = { reason: 'tls', code: BROKEN }
