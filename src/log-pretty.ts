// pino's JSON lines made readable for a person at a terminal:
//   10:25:46.271 INFO  [state] Redis at 127.0.0.1:6379 is reachable again  redis=redis://127.0.0.1:6379
// A small formatter of our own rather than pino-pretty: one function, no worker thread, no dependency.

const LEVELS: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO ',
  40: 'WARN ',
  50: 'ERROR',
  60: 'FATAL',
}

/** ANSI colors per level, used only when the output is a terminal that did not ask for NO_COLOR. */
const COLORS: Record<number, string> = { 10: '90', 20: '90', 30: '32', 40: '33', 50: '31', 60: '35' }

/** Fields every line has, shown in the line's head (or not at all) rather than as key=value. */
const HEAD_FIELDS = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'part', 'err'])

export interface PrettyOptions {
  color: boolean
}

/** One JSON log line (as pino writes it) as one readable line, with an error's stack indented below it. */
export function prettyLine(json: string, options: PrettyOptions): string {
  let entry: Record<string, unknown>
  try {
    entry = JSON.parse(json) as Record<string, unknown>
  } catch {
    return json
  }
  const level = typeof entry.level === 'number' ? entry.level : 30
  const label = LEVELS[level] ?? String(level)
  const time = typeof entry.time === 'string' ? entry.time.slice(11, 23) : ''
  const part = typeof entry.part === 'string' ? `[${entry.part}] ` : ''
  const fields = Object.entries(entry)
    .filter(([key]) => !HEAD_FIELDS.has(key))
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
  const head = options.color ? `\x1b[${COLORS[level] ?? '0'}m${label}\x1b[0m` : label
  let line = `${time} ${head} ${part}${String(entry.msg ?? '')}`
  if (fields.length > 0) line += `  ${fields.join(' ')}`
  return `${line}${errorLines(entry.err)}\n`
}

/** An error: its message on the line below; a bug's stack (an expected BG_* error has none) indented under it. */
function errorLines(err: unknown): string {
  if (typeof err !== 'object' || err === null) return ''
  const { message, stack, code } = err as { message?: unknown; stack?: unknown; code?: unknown }
  if (typeof stack === 'string') return `\n    ${stack.split('\n').join('\n    ')}`
  const named = typeof code === 'string' ? ` (${code})` : ''
  return typeof message === 'string' ? `\n    ${message}${named}` : ''
}
