import { isatty } from 'node:tty'
import pino, { type DestinationStream, type Logger } from 'pino'
import { prettyLine } from './log-pretty.ts'

export type { Logger }

/** `auto`: readable lines on a terminal, JSON otherwise (a file, a pipe, a log collector). */
export type LogFormat = 'auto' | 'json' | 'pretty'

export interface LogOptions {
  level: string
  /** Where lines go: a file descriptor (1 = stdout) written asynchronously, so logging never blocks a request. */
  fd?: number
  format?: LogFormat
  /** Each line written before the call returns: for the demo, whose banner must not be cut by log lines. */
  sync?: boolean
}

export function createLogger(options: LogOptions): Logger {
  const fd = options.fd ?? 1
  const destination = pino.destination({ fd, sync: options.sync ?? false, minLength: 0 })
  const format = options.format ?? 'auto'
  const pretty = format === 'pretty' || (format === 'auto' && isatty(fd))
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
    pretty ? prettyStream(destination, isatty(fd) && !process.env.NO_COLOR) : destination,
  )
}

/** pino writes each line to this; it hands the readable version on to the real destination. */
function prettyStream(destination: ReturnType<typeof pino.destination>, color: boolean): DestinationStream {
  return Object.assign(Object.create(null) as object, {
    write: (line: string) => void destination.write(prettyLine(line, { color })),
    // logger.flush() (before exiting) reaches the destination's buffer through this.
    flush: (callback?: (error?: Error) => void) => destination.flush(callback),
  }) as DestinationStream
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
