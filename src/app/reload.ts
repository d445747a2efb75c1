import type { EventStream } from '../admin/event-stream.ts'
import { type AuditTrail, recordAttempt } from '../audit/audit.ts'
import { changedKeys, keyMatches, planReload, type ReloadOutcome } from '../config/changes.ts'
import { loadConfig } from '../config/load.ts'
import type { Config } from '../config/types.ts'
import { BlueGreenError, ConfigError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { Metrics } from '../metrics/registry.ts'
import type { RoutingSnapshot } from '../routing/snapshot.ts'
import { RELOAD_SECTIONS, RELOADABLE_KEYS, type ReloadTargets } from './reload-sections.ts'

/** Who asked for a reload: a token's name or a client address (POST /reload), or a signal. */
export interface ReloadTrigger {
  actor: string
  address: string
}

/** A prepared reload: the new config and what it changes, or how it ended already (invalid, refused, unchanged). */
export type Prepared = { next: Config; changed: string[] } | { outcome: ReloadOutcome }

/**
 * A file that does not parse, as a reload tells it (its answer, the log, the audit trail that GET /events shows
 * without a token): where and why, without the parser's excerpt of the file, which may be the very line holding a
 * token or a webhook's URL. `bluegreen check` and `serve` still show it, to the operator at the terminal.
 */
function withoutExcerpt(message: string): string {
  return message
    .split('\n', 1)[0]!
    .replace(/ at line \d+, column \d+:$/, '')
    .replace(/, ".*" is not valid JSON$/, ' (not valid JSON)')
}

/**
 * Re-reads the config file and decides, before anything is applied, whether the reload can go ahead: the file
 * must be valid (else invalid, with every problem), and every key it changes must be one a running proxy can apply
 * (else refused, naming those that need a restart). Run once per reload: by the process, or by the primary of
 * --workers for all its workers.
 */
export async function prepareReload(file: string | undefined, running: Config): Promise<Prepared> {
  if (file === undefined) {
    return {
      outcome: {
        result: 'refused',
        file: null,
        changed: [],
        code: 'BG_RELOAD_REFUSED',
        message:
          'this proxy was started without a config file (bluegreen demo): there is nothing to re-read; ' +
          'run bluegreen serve --config FILE to reload',
      },
    }
  }
  let next: Config
  try {
    next = await loadConfig(file)
  } catch (error) {
    if (!(error instanceof BlueGreenError)) throw error
    const told = error instanceof ConfigError ? error.message : withoutExcerpt(error.message)
    const problems =
      error instanceof ConfigError
        ? error.problems.map(({ path, message }) => ({ path, message }))
        : [{ path: '', message: told }]
    const code = error instanceof ConfigError ? 'BG_CONFIG_INVALID' : 'BG_CONFIG_UNREADABLE'
    const message = `${file} was not applied, the running config is unchanged: ${told}`
    return { outcome: { result: 'invalid', file, changed: [], problems, code, message } }
  }
  const { changed, needsRestart } = planReload(running, next, RELOADABLE_KEYS)
  if (needsRestart.length > 0) {
    const message =
      `${file} was not applied, the running config is unchanged: ${needsRestart.join(', ')} ` +
      `${needsRestart.length === 1 ? 'needs' : 'need'} a restart (SIGTERM drains; start it again)`
    return { outcome: { result: 'refused', file, changed, needsRestart, code: 'BG_RELOAD_REFUSED', message } }
  }
  if (changed.length === 0) {
    return { outcome: { result: 'unchanged', file, changed, message: `${file}: nothing changed` } }
  }
  return { next, changed }
}

export interface ConfigReloaderOptions {
  /** The file the proxy was started with; undefined for `bluegreen demo`. */
  file: string | undefined
  /** The config running now, and where an applied one is put. */
  running: () => Config
  setRunning: (config: Config) => void
  targets: ReloadTargets
  /** With --workers: the primary prepares the reload and has every worker apply it. */
  viaPrimary?: () => Promise<ReloadOutcome>
  metrics: Metrics
  audit: AuditTrail
  events: EventStream
  snapshot: () => RoutingSnapshot | undefined
  /** Shutdown has begun: the parts a reload would change are closing, so it is refused. */
  closing: () => boolean
  logger: Logger
}

/**
 * A process's reloads: prepare (or ask the primary to), apply each section a changed key belongs to, and record
 * how it went (log, audit trail, live event, bluegreen_config_reloads_total). One reload at a time.
 */
export class ConfigReloader {
  readonly #options: ConfigReloaderOptions
  #queue: Promise<unknown> = Promise.resolve()

  constructor(options: ConfigReloaderOptions) {
    this.#options = options
  }

  /** Re-reads the file and applies it whole, or not at all; answers how it ended (it never throws for bad input). */
  reload(trigger: ReloadTrigger): Promise<ReloadOutcome> {
    const run = async () => {
      const outcome = this.#options.closing()
        ? shuttingDown(this.#options.file)
        : this.#options.viaPrimary
          ? await this.#options.viaPrimary()
          : await this.#reloadHere()
      this.record(outcome, trigger)
      return outcome
    }
    const result = this.#queue.then(run, run)
    this.#queue = result.catch(() => {})
    return result
  }

  /** Applies a config already validated and planned (here, or by the primary): each section whose keys changed. */
  apply(next: Config): string[] {
    if (this.#options.closing()) throw new Error('this process is shutting down')
    const changed = changedKeys(this.#options.running(), next)
    const touches = (patterns: readonly string[]) =>
      changed.some((key) => patterns.some((pattern) => keyMatches(pattern, key)))
    for (const section of RELOAD_SECTIONS) {
      if (touches([...section.keys, ...(section.reads ?? [])])) section.apply(this.#options.targets, next)
    }
    this.#options.setRunning(next)
    return changed
  }

  /** Logs, audits, publishes and counts a reload's outcome, once per reload (with --workers, by one worker). */
  record(outcome: ReloadOutcome, trigger: ReloadTrigger): void {
    const { logger, metrics, audit, events } = this.#options
    metrics.configReloads.inc({ result: outcome.result })
    const line = {
      result: outcome.result,
      file: outcome.file,
      changed: outcome.changed,
      needsRestart: outcome.needsRestart,
      problems: outcome.problems,
      workers: outcome.workers,
      by: trigger.actor,
    }
    if (outcome.code) logger.warn(line, `config reload ${outcome.result}: ${outcome.message}`)
    else logger.info(line, `config reload ${outcome.result}`)
    events.publish('reload', { ...outcome, by: trigger.actor, at: new Date().toISOString() })
    recordAttempt(
      audit,
      logger,
      {
        actor: trigger.actor,
        address: trigger.address,
        action: 'reload',
        from: this.#options.snapshot()?.state,
        to: undefined,
        reason: outcome.file === null ? 'reload' : `reload ${outcome.file}`,
        keys: outcome.needsRestart ?? outcome.changed,
        outcome: {
          result:
            outcome.result === 'applied'
              ? 'accepted'
              : outcome.result === 'unchanged'
                ? 'unchanged'
                : 'refused',
          ...(outcome.code ? { code: outcome.code, message: outcome.message } : {}),
        },
      },
      { logged: false },
    )
  }

  async #reloadHere(): Promise<ReloadOutcome> {
    const prepared = await prepareReload(this.#options.file, this.#options.running())
    if ('outcome' in prepared) return prepared.outcome
    const changed = this.apply(prepared.next)
    return {
      result: 'applied',
      file: this.#options.file ?? null,
      changed,
      message: `applied: ${changed.join(', ')}`,
    }
  }
}

function shuttingDown(file: string | undefined): ReloadOutcome {
  return {
    result: 'refused',
    file: file ?? null,
    changed: [],
    code: 'BG_RELOAD_REFUSED',
    message: 'the proxy is shutting down: a reload is not applied',
  }
}
