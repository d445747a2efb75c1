import type {
  DrainConfig,
  HealthCheckConfig,
  MetricsConfig,
  OutlierConfig,
  RollbackConfig,
  RolloutConfig,
  StandbyConfig,
} from './types.ts'
import { type Checker, durationIn, type Field, integerIn, MAX_TIMER_MS, parseBoolean } from './validate.ts'

// The sections that keep a release safe once traffic moves: health checks, outlier detection, automatic rollback,
// draining, metrics. Defaults suit most HTTP services; README's "Health, rollback and draining" explains them.

const BOOLEAN = 'true or false'
const DAY_MS = 24 * 60 * 60 * 1000

export function buildHealthCheck(check: Checker, field: Field): HealthCheckConfig {
  const health = check.section(field, [
    'enabled',
    'path',
    'timeout',
    'interval',
    'healthyThreshold',
    'unhealthyThreshold',
  ])
  return {
    enabled: check.read(health.field('enabled'), true, parseBoolean, BOOLEAN),
    path: check.read(
      health.field('path'),
      '/',
      (value) => (typeof value === 'string' && value.startsWith('/') ? value : undefined),
      'a path starting with "/", such as "/healthz"',
    ),
    timeout: check.read(health.field('timeout'), 2_000, ...durationIn(1, MAX_TIMER_MS)),
    interval: check.read(health.field('interval'), 5_000, ...durationIn(100, MAX_TIMER_MS)),
    healthyThreshold: check.read(health.field('healthyThreshold'), 2, ...integerIn(1, 100)),
    unhealthyThreshold: check.read(health.field('unhealthyThreshold'), 3, ...integerIn(1, 100)),
  }
}

export function buildOutlier(check: Checker, field: Field): OutlierConfig {
  const outlier = check.section(field, [
    'consecutiveFailures',
    'ejectionTime',
    'maxEjectionTime',
    'maxEjectedPercent',
  ])
  const built = {
    consecutiveFailures: check.read(outlier.field('consecutiveFailures'), 5, ...integerIn(0, 1000)),
    ejectionTime: check.read(outlier.field('ejectionTime'), 30_000, ...durationIn(1, MAX_TIMER_MS)),
    maxEjectionTime: check.read(outlier.field('maxEjectionTime'), 300_000, ...durationIn(1, MAX_TIMER_MS)),
    maxEjectedPercent: check.read(outlier.field('maxEjectedPercent'), 50, ...integerIn(0, 100)),
  }
  if (built.maxEjectionTime < built.ejectionTime) {
    check.report(`${outlier.path}.maxEjectionTime`, 'must be at least ejectionTime')
  }
  return built
}

export function buildRollback(check: Checker, field: Field): RollbackConfig {
  const rollback = check.section(field, [
    'enabled',
    'window',
    'watch',
    'evaluateEvery',
    'minRequests',
    'maxErrorRatio',
    'maxP99',
    'unavailableFor',
  ])
  const built: RollbackConfig = {
    enabled: check.read(rollback.field('enabled'), true, parseBoolean, BOOLEAN),
    window: check.read(rollback.field('window'), 30_000, ...durationIn(1_000, 3_600_000)),
    watch: check.read(rollback.field('watch'), 300_000, ...durationIn(1_000, MAX_TIMER_MS)),
    evaluateEvery: check.read(rollback.field('evaluateEvery'), 1_000, ...durationIn(100, 60_000)),
    minRequests: check.read(rollback.field('minRequests'), 50, ...integerIn(1, 1_000_000_000)),
    maxErrorRatio: check.read(
      rollback.field('maxErrorRatio'),
      0.05,
      (value) => (typeof value === 'number' && value >= 0 && value <= 1 ? value : undefined),
      'a ratio from 0 to 1, such as 0.05 for 5%',
    ),
    maxP99: check.read(rollback.field('maxP99'), 2_000, ...durationIn(0, MAX_TIMER_MS)),
    unavailableFor: check.read(rollback.field('unavailableFor'), 5_000, ...durationIn(0, MAX_TIMER_MS)),
  }
  if (built.window % 1_000 !== 0)
    check.report(`${rollback.path ? `${rollback.path}.` : ''}window`, 'must be whole seconds')
  return built
}

export function buildRollout(check: Checker, field: Field): RolloutConfig {
  const rollout = check.section(field, ['onLowTraffic'])
  return { onLowTraffic: check.oneOf(rollout.field('onLowTraffic'), ['hold', 'proceed'], 'hold') }
}

export function buildDrain(check: Checker, field: Field): DrainConfig {
  const drain = check.section(field, ['timeout'])
  return { timeout: check.read(drain.field('timeout'), 30_000, ...durationIn(0, MAX_TIMER_MS)) }
}

/** standby.keepFor: 24 h by default (the seed keeps the old color 24 to 48 h); at most a year. */
export function buildStandby(check: Checker, field: Field): StandbyConfig {
  const standby = check.section(field, ['keepFor'])
  return {
    keepFor: check.read(standby.field('keepFor'), DAY_MS, ...durationIn(1_000, 366 * DAY_MS)),
  }
}

export function buildMetrics(check: Checker, field: Field): MetricsConfig {
  const metrics = check.section(field, ['enabled'])
  return { enabled: check.read(metrics.field('enabled'), true, parseBoolean, BOOLEAN) }
}
