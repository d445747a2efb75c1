// Every error a user can see carries a stable BG_* code. Match on `code`, never on the message.
// README's "Error codes" table lists the same codes; test/unit/error-codes.test.ts keeps the two in step.

export const ErrorCodes = {
  BG_CONFIG_INVALID: 'the configuration file has problems; each is listed with its key path',
  BG_CONFIG_UNREADABLE: 'the configuration file could not be read or parsed',
  BG_BAD_REQUEST:
    'a malformed request: to the admin API (not JSON, wrong types, unknown fields) or one the proxy cannot forward',
  BG_BODY_TOO_LARGE: 'the request body to the admin API is larger than allowed',
  BG_UNKNOWN_COLOR: 'a color other than blue or green was named',
  BG_INVALID_WEIGHTS: 'weights are not integers 0..100 summing to 100',
  BG_UNAUTHORIZED: 'a mutating admin call came without the right bearer token',
  BG_FORBIDDEN:
    'the admin call came with a Host or Origin that is not allowed (DNS rebinding, cross-site requests)',
  BG_TOO_MANY_ATTEMPTS:
    'too many failed authentications from this address; retry after the Retry-After seconds',
  BG_NO_PREVIOUS_STATE: 'there is no earlier routing to roll back to',
  BG_ROLLOUT_RUNNING: 'a progressive rollout is running; abort it before starting another',
  BG_NO_ROLLOUT: 'there is no rollout running to abort',
  BG_NOT_FOUND: 'no such admin endpoint',
  BG_METHOD_NOT_ALLOWED:
    'the admin endpoint exists but not for this method, or a CONNECT to the proxy, which is no forward proxy',
  BG_UNKNOWN_REPLICA: 'no replica with that id is in the registry (GET /replicas lists them)',
  BG_REPLICA_LIVE: 'the replica is heartbeating: only a missing replica can be forgotten',
  BG_GENERATION_CONFLICT: 'expectedGeneration is stale: someone else changed the state first',
  BG_TARGET_UNHEALTHY:
    'the pool the change would send traffic to has no healthy upstream (use force to override)',
  BG_STATE_UNAVAILABLE: 'the state store is unreachable or not loaded, so the change was not made',
  BG_UPSTREAM_UNREACHABLE: 'the upstream refused the connection, reset it, or sent a broken response',
  BG_UPSTREAM_TIMEOUT: 'the upstream did not connect or answer within the configured timeout',
  BG_NO_HEALTHY_UPSTREAM: 'the chosen pool has no upstream to send the request to',
  BG_BAD_PREVIEW: 'the preview header named something other than blue or green',
  BG_UNSUPPORTED_TRANSFER_CODING:
    'the request body has a transfer coding other than chunked (such as gzip, chunked), which the proxy cannot forward',
  BG_ADMIN_UNREACHABLE: 'the CLI could not reach the admin API (refused, timed out, not resolvable)',
  BG_SHUTTING_DOWN: 'the proxy is shutting down and takes no new requests',
  BG_METRICS_UNAVAILABLE:
    'with --workers, a worker did not send its metrics in time, so /metrics could not add them up',
} as const

export type ErrorCode = keyof typeof ErrorCodes

export class BlueGreenError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly details: unknown

  constructor(code: ErrorCode, message: string, status = 500, details?: unknown) {
    super(message)
    this.name = 'BlueGreenError'
    this.code = code
    this.status = status
    this.details = details
  }

  toJSON(): { error: { code: ErrorCode; message: string; details?: unknown } } {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.details === undefined ? {} : { details: this.details }),
      },
    }
  }
}

export interface ConfigProblem {
  path: string
  message: string
}

export class ConfigError extends BlueGreenError {
  readonly problems: readonly ConfigProblem[]

  constructor(problems: readonly ConfigProblem[]) {
    const list = problems.map((p) => `  ${p.path || '(root)'}: ${p.message}`).join('\n')
    super(
      'BG_CONFIG_INVALID',
      `invalid configuration, ${problems.length} problem(s):\n${list}`,
      400,
      problems,
    )
    this.name = 'ConfigError'
    this.problems = problems
  }
}

/** The body a proxy- or admin-generated error answers with, as the contract fixes it. */
export function errorBody(code: ErrorCode, message: string): string {
  return JSON.stringify({ error: { code, message } })
}

/** The state store cannot be reached or read: the change was not made (503). */
export function unavailable(message: string): BlueGreenError {
  return new BlueGreenError('BG_STATE_UNAVAILABLE', message, 503)
}
