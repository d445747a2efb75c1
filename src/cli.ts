// The only module that touches `process`: arguments, exit codes, signals.
import { availableParallelism } from 'node:os'
import { AdminCallError } from './admin/client.ts'
import { COMMANDS, commandHelp, forTheCommandLine } from './cli/admin-commands.ts'
import { parseCommandLine, unknownCommand } from './cli/arguments.ts'
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError } from './cli/command.ts'
import type { Config } from './config/types.ts'
import { BlueGreenError, type CodeEntry, ErrorCodes } from './errors.ts'
import type { Logger } from './log.ts'
import { buildInfo } from './version.ts'

// The proxy itself (undici, pino, the stores, the config parser) loads only for `serve` and `demo`, so the
// client commands start in a fraction of the time.

const USAGE = `bluegreen: a blue-green traffic switch

Usage:
  bluegreen serve --config FILE [--workers N|auto]
                                    run the proxy (or set BLUEGREEN_CONFIG); N worker processes share its ports
  bluegreen check --config FILE     validate the config without starting anything (exit 0, or 2 and every problem)
  bluegreen demo [--port 8080] [--admin-port 9090]
                                    two sample upstreams, the proxy and the admin API on loopback
  bluegreen version [--json]        this package's version and the Node.js running it (also --version)
${Object.entries(COMMANDS)
  .map(([, command]) => `  ${command.usage}\n${' '.repeat(36)}${command.summary}`)
  .join('\n')}

"bluegreen help COMMAND" (or "bluegreen COMMAND --help") shows a command's options. The admin commands take
--admin URL (default http://127.0.0.1:9090, or BLUEGREEN_ADMIN), --token T (or BLUEGREEN_ADMIN_TOKEN) and --json.

Exit codes: 0 done; 1 the call failed (the reason is printed); 2 bad usage or an invalid config;
3 replicas lagging: a change was made but not every replica applied it within the wait (or one is missing),
or "replicas" found one behind or missing.
`

function fail(message: string, code: number): never {
  process.stderr.write(`bluegreen: ${message}\n`)
  process.exit(code)
}

const SERVE_HELP =
  'bluegreen serve --config FILE [--workers N|auto]\n\n  run the proxy; the config may also come from BLUEGREEN_CONFIG\n' +
  '  --workers N   N worker processes (node:cluster) sharing the ports; auto: one per CPU; default 1\n'
const DEMO_HELP =
  'bluegreen demo [--port 8080] [--admin-port 9090]\n\n  two sample upstreams, the proxy and the admin API on loopback, with the file store\n'
const CHECK_HELP =
  'bluegreen check --config FILE\n\n  validate the config without starting anything (or set BLUEGREEN_CONFIG): exit 0 and a summary\n' +
  '  (listeners, pools and upstreams, store, rollback), or exit 2 and every problem, as serve would print them\n'

/** The commands besides the admin ones, and their help. */
const LOCAL_HELP: Record<string, string> = { serve: SERVE_HELP, demo: DEMO_HELP, check: CHECK_HELP }

const KNOWN_COMMANDS = [...Object.keys(LOCAL_HELP), ...Object.keys(COMMANDS), 'help', 'version']

function helpFor(command: string): string {
  if (LOCAL_HELP[command]) return LOCAL_HELP[command]
  if (COMMANDS[command]) return commandHelp(command)
  throw unknownCommand(command, KNOWN_COMMANDS)
}

/** The code goes at the end of the message's first line: "invalid configuration, 2 problem(s) (BG_CONFIG_INVALID):". */
function withCode(message: string, code: string): string {
  const [first = '', ...rest] = message.split('\n')
  const line = first.endsWith(':') ? `${first.slice(0, -1)} (${code}):` : `${first} (${code})`
  return [line, ...rest].join('\n')
}

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine(argv)
  const [command, ...args] = positionals
  if (values.version || command === 'version') return printVersion(values.json === true)
  if (command === undefined || (command === 'help' && args.length === 0)) {
    process.stdout.write(USAGE)
    return
  }
  if (command === 'help') return void process.stdout.write(helpFor(args[0]!))
  if (values.help) return void process.stdout.write(helpFor(command))
  if (command === 'serve' || command === 'check') {
    const file = values.config ?? process.env.BLUEGREEN_CONFIG
    if (!file) throw new UsageError(`${command} needs --config FILE (or BLUEGREEN_CONFIG)`)
    if (args.length > 0) throw new UsageError(`unexpected argument "${args[0]}" for ${command}`)
    return command === 'serve' ? serve(file, workerCount(values.workers)) : check(file)
  }
  if (command === 'demo') return demo(port(values.port, 8080), port(values['admin-port'], 9090))
  const admin = COMMANDS[command]
  if (!admin) throw unknownCommand(command, KNOWN_COMMANDS)
  // Read only by the commands that call the admin API, so a stray BLUEGREEN_ADMIN cannot break `serve`.
  const client = {
    url: adminUrl(values.admin ?? process.env.BLUEGREEN_ADMIN ?? 'http://127.0.0.1:9090'),
    token: values.token ?? process.env.BLUEGREEN_ADMIN_TOKEN,
  }
  const result = await admin.run(client, args, values, (frame) => process.stdout.write(frame))
  process.stdout.write(result.output)
  if (result.exitCode !== EXIT_OK) process.exitCode = result.exitCode
}

/** This CLI's own version, not the proxy's behind --admin: GET /version asks a running one. */
function printVersion(json: boolean): void {
  const info = buildInfo()
  const commit = info.commit ? `, commit ${info.commit}` : ''
  process.stdout.write(
    json ? `${JSON.stringify(info)}\n` : `bluegreen-proxy ${info.version} (Node.js ${info.node}${commit})\n`,
  )
}

/** The admin API's base URL; anything else (say "localhost:9090", a URL with no scheme) is a usage error. */
function adminUrl(value: string): string {
  const url = URL.parse(value)
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.host === '') {
    throw new UsageError(
      `--admin takes an http:// or https:// URL such as http://127.0.0.1:9090, got "${value}"`,
    )
  }
  return value
}

/** --workers: a whole number of processes, or "auto" for one per CPU this process may use. */
function workerCount(value: string | undefined): number {
  if (value === undefined) return 1
  if (value === 'auto') return availableParallelism()
  const number = Number(value)
  if (!/^\d+$/.test(value) || number < 1 || number > 256) {
    throw new UsageError(`--workers takes a whole number from 1 to 256 or "auto", got "${value}"`)
  }
  return number
}

function port(value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback
  const number = Number(value)
  if (!Number.isInteger(number) || number < 0 || number > 65535)
    throw new UsageError(`"${value}" is not a port`)
  return number
}

/**
 * SIGTERM or SIGINT drains and exits 0; a second signal exits at once. A cluster worker takes SIGTERM only: its
 * primary passes every shutdown on as SIGTERM, and a terminal's Ctrl-C, which reaches the whole process group,
 * must not count as a second signal.
 */
function onSignals(logger: Logger, close: () => Promise<void>, signals: NodeJS.Signals[] = SIGNALS): void {
  let stopping = false
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now')
      logger.flush()
      process.exit(EXIT_FAILED)
    }
    stopping = true
    logger.info({ signal }, 'signal received')
    close().then(
      () => {
        logger.flush()
        process.exit(0)
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed')
        logger.flush()
        process.exit(EXIT_FAILED)
      },
    )
  }
  for (const signal of SIGNALS) {
    process.on(
      signal,
      signals.includes(signal) ? stop : () => logger.debug({ signal }, 'signal left to the primary'),
    )
  }
}

const SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGINT']

/**
 * SIGHUP re-reads the config file and applies it whole or not at all, as systemd's ExecReload and every nginx or
 * HAProxy habit expect; how it went is logged (and audited, counted, published) by the reload itself. A cluster
 * worker leaves it to its primary, which reloads every worker: a terminal's hang-up reaches the whole group.
 */
function reloadOnHangup(logger: Logger, reload: (() => Promise<unknown>) | undefined): void {
  process.on('SIGHUP', () => {
    if (!reload) {
      return void logger.info(
        { signal: 'SIGHUP' },
        'SIGHUP left to the primary: send it to the primary to reload every worker',
      )
    }
    logger.info({ signal: 'SIGHUP' }, 'signal received: reloading the config')
    reload().catch((error: unknown) => logger.error({ err: error }, 'config reload failed'))
  })
}

/** Who the audit trail says reloaded on SIGHUP. */
const HANGUP = { actor: 'signal:SIGHUP', address: 'local' }

/** A worker forked after a reload runs the config its siblings run (the primary passes it on), not the file's. */
function runningConfig(variable: string, freeze: <T>(value: T) => T): Config | undefined {
  const passed = process.env[variable]
  return passed === undefined ? undefined : freeze(JSON.parse(passed) as Config)
}

function exitOnCrash(logger: Logger): void {
  // A bug, not bad input: say so loudly and let the supervisor restart a clean process.
  process.on('uncaughtException', (error) => {
    logger.fatal({ err: error }, 'uncaught exception')
    logger.flush()
    process.exit(70)
  })
}

async function serve(file: string, workers: number): Promise<void> {
  const [
    { loadConfig },
    { deepFreeze: freeze },
    { createLogger },
    { startPrimary, RUNNING_CONFIG_ENV: passed },
    { joinCluster },
  ] = await Promise.all([
    import('./config/load.ts'),
    import('./config/validate.ts'),
    import('./log.ts'),
    import('./cluster.ts'),
    import('./cluster-worker.ts'),
  ])
  // Validated here in the primary as well, so a bad config is one error and exit 2, not N failing workers.
  const config = runningConfig(passed, freeze) ?? (await loadConfig(file))
  const root = createLogger({ level: config.log.level, format: config.log.format })
  const cluster = joinCluster(root)
  if (!cluster && workers > 1) {
    const logger = root.child({ part: 'cluster' })
    exitOnCrash(logger)
    const primary = startPrimary({
      workers,
      logger,
      // Node's own variable still chooses, for measuring one against the other.
      schedulingPolicy: process.env.NODE_CLUSTER_SCHED_POLICY === 'none' ? 'none' : 'rr',
      stopTimeout: config.shutdown.delay + config.shutdown.grace + 10_000,
      configFile: file,
      config,
    })
    for (const signal of SIGNALS) process.on(signal, () => primary.stop(signal))
    reloadOnHangup(logger, () => primary.reload(HANGUP))
    const code = await primary.exited
    logger.flush()
    process.exit(code)
  }
  const logger = cluster ? root.child({ worker: cluster.workerId }) : root
  exitOnCrash(logger)
  const { startApp } = await import('./app.ts')
  // Listening for signals from the start: a worker told to stop while starting finishes starting, then drains.
  const starting = startApp(config, logger, { cluster, configFile: file })
  onSignals(logger, async () => (await starting).close(), cluster ? ['SIGTERM'] : SIGNALS)
  reloadOnHangup(logger, cluster ? undefined : async () => (await starting).reload(HANGUP))
  await starting
  cluster?.started()
}

async function check(file: string): Promise<void> {
  const [{ loadConfig }, { describeConfig }] = await Promise.all([
    import('./config/load.ts'),
    import('./cli/check.ts'),
  ])
  process.stdout.write(describeConfig(await loadConfig(file), file))
}

async function demo(proxyPort: number, adminPort: number): Promise<void> {
  const [{ startDemo }, { createLogger }] = await Promise.all([import('./demo.ts'), import('./log.ts')])
  // Written synchronously, so the start-up lines are out before the banner and never cut through it.
  const logger = createLogger({ level: 'info', sync: true })
  exitOnCrash(logger)
  const running = await startDemo({ port: proxyPort, adminPort, stateDir: '.bluegreen-demo', logger })
  process.stdout.write(running.instructions)
  onSignals(logger, () => running.close())
  // No file to re-read: the reload says so (and the demo keeps running, where Node's default would end it).
  reloadOnHangup(logger, () => running.app.reload(HANGUP))
}

main(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof UsageError) fail(error.message, EXIT_USAGE)
  if (error instanceof AdminCallError)
    fail(`${forTheCommandLine(error.message)} (${error.code})`, EXIT_FAILED)
  if (error instanceof BlueGreenError) {
    // A code met on the command line names its exit code (a bad config: 2, usage); any other failed.
    const entry: CodeEntry = ErrorCodes[error.code]
    fail(withCode(error.message, error.code), entry.exit ?? EXIT_FAILED)
  }
  const code = (error as { code?: string }).code
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    fail((error as Error).message, EXIT_USAGE)
  }
  if (code === 'EADDRINUSE' || code === 'EACCES') fail((error as Error).message, EXIT_FAILED)
  process.stderr.write(`bluegreen: unexpected error\n${(error as Error).stack ?? String(error)}\n`)
  process.exit(EXIT_FAILED)
})
