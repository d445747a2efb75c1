import pino, { type Logger } from 'pino'

export type { Logger }

export interface LogOptions {
  level: string
  /** Where lines go: a file descriptor (1 = stdout) written asynchronously, so logging never blocks a request. */
  fd?: number
}

export function createLogger(options: LogOptions): Logger {
  const destination = pino.destination({ fd: options.fd ?? 1, sync: false, minLength: 0 })
  return pino(
    {
      level: options.level,
      base: { pid: process.pid },
      // Secrets must never reach the logs, whatever a caller passes in.
      redact: {
        paths: ['token', '*.token', 'headers.authorization', 'config.admin.token'],
        censor: '[redacted]',
      },
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: { err: serializeError },
    },
    destination,
  )
}

/** A logger that writes nothing, for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}

/**
 * An expected failure (a BG_* error: Redis unreachable, a state file locked) is a line for the operator, not a stack
 * for a developer: its code and message only. Anything else is a bug and keeps its stack and causes.
 */
function serializeError(error: unknown): unknown {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    if (typeof code === 'string' && code.startsWith('BG_'))
      return { type: error.name, code, message: error.message }
  }
  return pino.stdSerializers.err(error as Error)
}
