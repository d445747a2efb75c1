// Every error a user can see carries a stable BG_* code. Match on `code`, never on the message.
// README's "Error codes" table lists the same codes with their statuses; test/unit/error-codes.test.ts keeps the two
// in step.

export interface CodeEntry {
  /** The HTTP status every answer with this code carries (as fastify's createError binds one to each code). */
  readonly status?: number
  /** For a code met on the command line rather than in an HTTP answer: the CLI's exit code. */
  readonly exit?: number
  readonly meaning: string
}

export const ErrorCodes = {
  // Met at start-up (exit code 2) and by a reload (POST /reload answers 400, and bluegreen reload exits 1).
  BG_CONFIG_INVALID: {
    status: 400,
    exit: 2,
    meaning: 'the configuration file has problems; each is listed with its key path',
  },
  BG_CONFIG_UNREADABLE: {
    status: 400,
    exit: 2,
    meaning: 'the configuration file could not be read or parsed',
  },
  BG_BAD_REQUEST: {
    status: 400,
    meaning:
      'a malformed request: to the admin API (not JSON, wrong types, unknown fields) or one the proxy cannot forward',
  },
  BG_BODY_TOO_LARGE: { status: 413, meaning: 'the request body to the admin API is larger than allowed' },
  BG_UNKNOWN_COLOR: { status: 400, meaning: 'a color other than blue or green was named' },
  BG_INVALID_WEIGHTS: { status: 400, meaning: 'weights are not integers 0..100 summing to 100' },
  BG_UNAUTHORIZED: { status: 401, meaning: 'a mutating admin call came without the right bearer token' },
  BG_FORBIDDEN: {
    status: 403,
    meaning:
      'the admin call came with a Host or Origin that is not allowed (DNS rebinding, cross-site requests)',
  },
  BG_TOO_MANY_ATTEMPTS: {
    status: 429,
    meaning: 'too many failed authentications from this address; retry after the Retry-After seconds',
  },
  BG_NO_PREVIOUS_STATE: { status: 409, meaning: 'there is no earlier routing to roll back to' },
  BG_ROLLOUT_RUNNING: {
    status: 409,
    meaning: 'a progressive rollout is running; abort it before starting another',
  },
  BG_NO_ROLLOUT: { status: 409, meaning: 'there is no rollout running to abort' },
  BG_NOT_FOUND: { status: 404, meaning: 'no such admin endpoint' },
  BG_METHOD_NOT_ALLOWED: {
    status: 405,
    meaning:
      'the admin endpoint exists but not for this method, or a CONNECT to the proxy, which is no forward proxy',
  },
  BG_UNKNOWN_REPLICA: {
    status: 404,
    meaning: 'no replica with that id is in the registry (GET /replicas lists them)',
  },
  BG_REPLICA_LIVE: {
    status: 409,
    meaning: 'the replica is heartbeating: only a missing replica can be forgotten',
  },
  BG_GENERATION_CONFLICT: {
    status: 409,
    meaning: 'expectedGeneration is stale: someone else changed the state first',
  },
  BG_TARGET_UNHEALTHY: {
    status: 412,
    meaning: 'the pool the change would send traffic to has no healthy upstream (use force to override)',
  },
  BG_SMOKE_FAILED: {
    status: 412,
    meaning:
      'a smoke check against the color the change sends traffic to failed; details has every check (use force to override)',
  },
  BG_MIRROR_MISMATCH: {
    status: 412,
    meaning:
      "the mirrored traffic's answers from the color the change sends traffic to differ from the live ones too often, or too few were compared; details has the figures and the top differences (use force to override)",
  },
  BG_STATE_UNAVAILABLE: {
    status: 503,
    meaning: 'the state store is unreachable or not loaded, so the change was not made',
  },
  BG_INTERNAL: {
    status: 500,
    meaning: 'the admin API failed in a way it does not expect (a bug): the proxy log has the stack',
  },
  BG_UPSTREAM_UNREACHABLE: {
    status: 502,
    meaning: 'the upstream refused the connection, reset it, or sent a broken response',
  },
  BG_UPSTREAM_TIMEOUT: {
    status: 504,
    meaning: 'the upstream did not connect or answer within the configured timeout',
  },
  BG_NO_HEALTHY_UPSTREAM: { status: 503, meaning: 'the chosen pool has no upstream to send the request to' },
  BG_BAD_PREVIEW: { status: 400, meaning: 'the preview header named something other than blue or green' },
  BG_UNSUPPORTED_TRANSFER_CODING: {
    status: 501,
    meaning:
      'the request body has a transfer coding other than chunked (such as gzip, chunked), which the proxy cannot forward',
  },
  BG_ADMIN_UNREACHABLE: {
    exit: 1,
    meaning: 'the CLI could not reach the admin API (refused, timed out, not resolvable)',
  },
  BG_NOT_ADMIN_API: {
    exit: 1,
    meaning:
      'what answered at --admin is not a bluegreen admin API (its answers lack the x-bluegreen-admin mark), or it sent something other than JSON',
  },
  BG_RELOAD_REFUSED: {
    status: 422,
    meaning:
      'a reload was refused: the new config changes keys that need a restart (named), there is no config file to re-read, or the proxy is shutting down',
  },
  BG_RELOAD_FAILED: {
    status: 500,
    meaning: 'with --workers, a worker failed to apply a reload or did not answer in time (named)',
  },
  BG_SHUTTING_DOWN: { status: 503, meaning: 'the proxy is shutting down and takes no new requests' },
  BG_TOO_MANY_STREAMS: {
    status: 503,
    meaning: 'GET /events/stream: this replica already serves as many live event streams as it allows (100)',
  },
  BG_METRICS_UNAVAILABLE: {
    status: 503,
    meaning: 'with --workers, a worker did not send its metrics in time, so /metrics could not add them up',
  },
} as const satisfies Record<string, CodeEntry>

export type ErrorCode = keyof typeof ErrorCodes

/** The codes an HTTP answer can carry: those with a status. */
export type AnsweredCode = {
  [Code in ErrorCode]: (typeof ErrorCodes)[Code] extends { status: number } ? Code : never
}[ErrorCode]

/** The HTTP status that goes with a code, always the same one. */
export function statusOf(code: AnsweredCode): number {
  return ErrorCodes[code].status
}

export class BlueGreenError extends Error {
  readonly code: AnsweredCode
  readonly status: number
  readonly details: unknown

  constructor(code: AnsweredCode, message: string, details?: unknown) {
    super(message)
    this.name = 'BlueGreenError'
    this.code = code
    this.status = statusOf(code)
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
    super('BG_CONFIG_INVALID', `invalid configuration, ${problems.length} problem(s):\n${list}`, problems)
    this.name = 'ConfigError'
    this.problems = problems
  }
}

/** The body a proxy- or admin-generated error answers with, as the contract fixes it. */
export function errorBody(code: ErrorCode, message: string): string {
  return JSON.stringify({ error: { code, message } })
}

/**
 * The code an audit records for a failure: its own, or BG_INTERNAL for an error nothing expected (a bug), which
 * the admin API answers 500 BG_INTERNAL; a store that fails says so with BG_STATE_UNAVAILABLE itself.
 */
export function codeOf(error: unknown): AnsweredCode {
  return error instanceof BlueGreenError ? error.code : 'BG_INTERNAL'
}

/** The state store cannot be reached or read: the change was not made (503). */
export function unavailable(message: string): BlueGreenError {
  return new BlueGreenError('BG_STATE_UNAVAILABLE', message)
}

/**
 * A store's failure as BG_STATE_UNAVAILABLE, saying what it was doing; a BlueGreenError (a conflict, bad input, an
 * unavailable store already named) passes through as it is.
 */
export function asUnavailable(error: unknown, context: string): BlueGreenError {
  if (error instanceof BlueGreenError) return error
  const wrapped = unavailable(`${context}: ${error instanceof Error ? error.message : String(error)}`)
  wrapped.cause = error
  return wrapped
}

/**
 * A listener that cannot bind, naming which one and where: Node's own "listen EADDRINUSE: address already in use
 * 127.0.0.1:8080" does not say whether the proxy or the admin API failed. Keeps the system error's code.
 */
export class ListenError extends Error {
  readonly code: string | undefined

  constructor(
    listener: 'proxy' | 'admin' | 'HTTPS redirect',
    host: string,
    port: number,
    cause: NodeJS.ErrnoException,
  ) {
    const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
    const reason =
      cause.code === 'EADDRINUSE'
        ? 'the address is already in use'
        : cause.code === 'EACCES'
          ? 'permission denied (ports below 1024 need privileges)'
          : cause.code === 'EADDRNOTAVAIL'
            ? 'no network interface has this address'
            : cause.message
    super(`the ${listener} listener cannot listen on ${address}: ${reason} (${cause.code ?? 'error'})`, {
      cause,
    })
    this.name = 'ListenError'
    this.code = cause.code
  }
}
