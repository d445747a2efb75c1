import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse, parseAllDocuments } from 'yaml'
import { buildConfig } from '../../src/config/schema.ts'
import type { Config } from '../../src/config/types.ts'
import { echoUpstream, REPO, startProxy, type TestProxy, type TestServer } from '../helpers/servers.ts'

// deploy/ holds examples people copy: a compose rig, Kubernetes manifests, Prometheus rules, a Grafana dashboard.
// These tests keep them true to the code: every file parses, every bluegreen config in them passes the real
// config schema with the variables its deployment provides, every metric they query exists in the app's registry,
// and the ports, paths and timings that must agree across files do.

const DEPLOY = join(REPO, 'deploy')
const read = (path: string) => readFile(join(DEPLOY, path), 'utf8')

type Mapping = Record<string, unknown>
// The examples are checked field by field below; `any` keeps those reads short, the assertions keep them honest.
// biome-ignore lint/suspicious/noExplicitAny: parsed YAML of known shape
type Manifest = any

/** Every document of a YAML file; compose's `<<` merge keys are YAML 1.1, so they are enabled. */
function documents(text: string): Manifest[] {
  return parseAllDocuments(text, { merge: true }).map((document) => {
    if (document.errors.length > 0) throw document.errors[0]
    return document.toJS()
  })
}

const yamlFiles = (await readdir(DEPLOY, { recursive: true })).filter((file) => /\.ya?ml$/.test(file)).sort()

/** The image's facts the examples depend on: where it reads its config and which user it runs as. */
const dockerfile = await readFile(join(REPO, 'Dockerfile'), 'utf8')
const IMAGE_CONFIG = /\bBLUEGREEN_CONFIG=(\S+)/.exec(dockerfile)?.[1]
const IMAGE_UID = Number(/^USER\s+(\d+)/m.exec(dockerfile)?.[1])

/** ${NAME} references a config's values need from the environment (those with a default, ${NAME:-x}, do not). */
function requiredVariables(text: string): string[] {
  const strings = (value: unknown): string[] =>
    typeof value === 'string'
      ? [value]
      : typeof value === 'object' && value !== null
        ? Object.values(value).flatMap(strings)
        : []
  const names = strings(parse(text)).flatMap((value) =>
    [...value.matchAll(/(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map(([, name]) => name!),
  )
  return [...new Set(names)].sort()
}

function build(raw: unknown, env: Record<string, string>): Config {
  try {
    return buildConfig(raw, env)
  } catch (error) {
    const problems = (error as { problems?: unknown }).problems
    throw new Error(`${(error as Error).message}\n${JSON.stringify(problems ?? [], null, 2)}`)
  }
}

/** A port as a manifest writes it: a number, or the name of one of the container's ports. */
function resolvePort(port: number | string, ports: { name?: string; containerPort: number }[]): number {
  if (typeof port === 'number') return port
  const found = ports.find((candidate) => candidate.name === port)
  if (!found) throw new Error(`no container port named "${port}"`)
  return found.containerPort
}

function seconds(duration: string): number {
  let total = 0
  for (const [, amount = '0', unit] of duration.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    total += Number(amount) * { ms: 0.001, s: 1, m: 60, h: 3600 }[unit as 'ms' | 's' | 'm' | 'h']
  }
  return total
}

const containsAll = (outer: Mapping, inner: Mapping) =>
  Object.entries(inner).every(([key, value]) => outer[key] === value)

describe('deploy/ files parse', () => {
  it('finds the examples', () => {
    expect(yamlFiles).toEqual(
      expect.arrayContaining([
        'docker-compose.yaml',
        'compose/bluegreen.yaml',
        'docker/config.yaml',
        'kubernetes/deployment.yaml',
        'prometheus/alerts.yaml',
      ]),
    )
  })

  it.each(yamlFiles)('%s is valid YAML', async (file) => {
    const parsed = documents(await read(file))
    expect(parsed.length).toBeGreaterThan(0)
    for (const document of parsed) expect(document).toBeTypeOf('object')
  })

  it('the Grafana dashboard is JSON with a query in every panel', async () => {
    const dashboard = JSON.parse(await read('grafana/bluegreen-dashboard.json'))
    const ids = dashboard.panels.map((panel: Manifest) => panel.id)
    expect(new Set(ids).size).toBe(ids.length)
    const variables = dashboard.templating.list.map((variable: Manifest) => variable.name)
    expect(variables).toContain('datasource')
    for (const panel of dashboard.panels) {
      expect(panel.targets.length, panel.title).toBeGreaterThan(0)
      expect(panel.datasource.uid).toBe('$' + '{datasource}') // Grafana's variable, not a template literal
      for (const target of panel.targets) expect(target.expr, panel.title).toBeTruthy()
    }
  })
})

describe('the bluegreen configs in deploy/ pass the config schema', () => {
  it('each config-like file is one of the examples checked here', async () => {
    const configs: string[] = []
    for (const file of yamlFiles) {
      for (const document of documents(await read(file))) {
        if (document?.pools) configs.push(file)
        for (const [key, value] of Object.entries(document?.kind === 'ConfigMap' ? document.data : {})) {
          if (parse(value as string)?.pools) configs.push(`${file}#${key}`)
        }
      }
    }
    expect(configs.sort()).toEqual([
      'compose/bluegreen.yaml',
      'docker/config.yaml',
      'kubernetes/configmap.yaml#config.yaml',
    ])
  })

  it('docker/config.yaml, with the variables its documented `docker run` sets', async () => {
    const text = await read('docker/config.yaml')
    // `-e NAME=value`, or `-e NAME` passing the operator's own variable through.
    const env: Record<string, string> = {}
    for (const [, name = '', value] of text.matchAll(/\s-e\s+([A-Z_][A-Z0-9_]*)(?:=(\S+))?/g)) {
      env[name] = value ?? `${name.toLowerCase()}-from-the-shell`
    }
    expect(Object.keys(env)).toEqual(expect.arrayContaining(requiredVariables(text)))
    const config = build(parse(text), env)
    expect(config.admin.tokens.map((token) => token.name)).toEqual(['admin'])
    expect(config.state.store).toBe('file')
  })
})

describe('docker-compose.yaml', () => {
  let compose: Manifest
  let config: Config
  let proxies: [string, Manifest][]
  const configTarget = (service: Manifest) =>
    (service.volumes ?? [])
      .map((volume: string) => volume.split(':'))
      .find(([source]: string[]) => resolve(DEPLOY, source!) === join(DEPLOY, 'compose/bluegreen.yaml'))?.[1]

  beforeAll(async () => {
    ;[compose] = documents(await read('docker-compose.yaml'))
    proxies = Object.entries<Manifest>(compose.services).filter(([, service]) => configTarget(service))
    const text = await read('compose/bluegreen.yaml')
    // Compose interpolates ${...} in its own file from the operator's shell; the proxy then reads the container's.
    const [, proxy] = proxies[0]!
    const env = Object.fromEntries(
      Object.entries<string>(proxy.environment).map(([name, value]) => [
        name,
        value.includes('${') ? `${name.toLowerCase()}-from-the-shell` : value,
      ]),
    )
    expect(Object.keys(env)).toEqual(expect.arrayContaining(requiredVariables(text)))
    config = build(parse(text), env)
  })

  it('runs two proxy replicas built from the Dockerfile, on Redis, with the config where the image reads it', () => {
    expect(proxies.map(([name]) => name)).toEqual(['proxy-1', 'proxy-2'])
    for (const [, service] of proxies) {
      expect(existsSync(join(resolve(DEPLOY, service.build.context), service.build.dockerfile))).toBe(true)
      expect(configTarget(service)).toBe(IMAGE_CONFIG)
      expect(seconds(service.stop_grace_period)).toBeGreaterThan(
        (config.shutdown.delay + config.shutdown.grace) / 1000,
      )
    }
    expect(config.state.store).toBe('redis')
    expect(config.admin.tokens.length).toBeGreaterThan(0)
  })

  it('publishes the config’s listen and admin ports', () => {
    for (const [name, service] of proxies) {
      const containerPorts = service.ports.map((port: string) => Number(port.split(':').at(-1)))
      expect(containerPorts, name).toEqual(
        expect.arrayContaining([config.listen.port, config.admin.listen.port]),
      )
    }
  })

  it('points the config at services that exist, on the ports they listen on', () => {
    const redis = new URL(config.state.redis!.url)
    expect(Object.keys(compose.services)).toContain(redis.hostname)
    for (const color of ['blue', 'green'] as const) {
      for (const upstream of config.pools[color].upstreams) {
        const url = new URL(upstream.url)
        const service = compose.services[url.hostname]
        expect(service, url.hostname).toBeDefined()
        expect(service.command.join(' ')).toContain(`-listen=:${url.port}`)
      }
    }
  })

  it('has Prometheus scrape every replica’s admin port, with the alert rules loaded', async () => {
    const [prometheus] = documents(await read('prometheus/prometheus.yaml'))
    const targets = prometheus.scrape_configs.flatMap((job: Manifest) =>
      job.static_configs.flatMap((group: Manifest) => group.targets),
    )
    expect(targets.sort()).toEqual(proxies.map(([name]) => `${name}:${config.admin.listen.port}`).sort())
    const mounts = Object.fromEntries(
      compose.services.prometheus.volumes.map((volume: string) => {
        const [source, target] = volume.split(':')
        return [relative(DEPLOY, resolve(DEPLOY, source!)), target]
      }),
    )
    expect(compose.services.prometheus.command).toContain(
      `--config.file=${mounts['prometheus/prometheus.yaml']}`,
    )
    expect(prometheus.rule_files).toEqual([mounts['prometheus/alerts.yaml']])
  })
})

describe('the Kubernetes manifests', () => {
  let manifests: Manifest[]
  let deployment: Manifest
  let container: Manifest
  let config: Config
  const byKind = (kind: string) => manifests.filter((manifest) => manifest.kind === kind)
  const podLabels = () => deployment.spec.template.metadata.labels

  beforeAll(async () => {
    const files = yamlFiles.filter(
      (file) => file.startsWith('kubernetes/') && !file.endsWith('kustomization.yaml'),
    )
    manifests = (await Promise.all(files.map(async (file) => documents(await read(file))))).flat()
    ;[deployment] = byKind('Deployment')
    ;[container] = deployment.spec.template.spec.containers
    const [configMap] = byKind('ConfigMap')
    const [secret] = byKind('Secret')
    const text = configMap.data['config.yaml']
    // The container's environment, Secret references resolved against secret.yaml.
    const env: Record<string, string> = {}
    for (const variable of container.env) {
      const reference = variable.valueFrom?.secretKeyRef
      if (reference) {
        expect(reference.name).toBe(secret.metadata.name)
        expect(Object.keys(secret.stringData)).toContain(reference.key)
        env[variable.name] = secret.stringData[reference.key]
      } else env[variable.name] = variable.value
    }
    expect(Object.keys(env)).toEqual(expect.arrayContaining(requiredVariables(text)))
    config = build(parse(text), env)
  })

  it('mounts the ConfigMap where the image reads its config', () => {
    const [configMap] = byKind('ConfigMap')
    const volume = deployment.spec.template.spec.volumes.find(
      (candidate: Manifest) => candidate.configMap?.name === configMap.metadata.name,
    )
    const mount = container.volumeMounts.find((candidate: Manifest) => candidate.name === volume.name)
    const item = volume.configMap.items.find((candidate: Manifest) => candidate.key === 'config.yaml')
    expect(join(mount.mountPath, mount.subPath ? '' : item.path)).toBe(IMAGE_CONFIG)
  })

  it('exposes the config’s ports, probes /readyz and /healthz on the admin port, and scrapes it', async () => {
    const ports = container.ports
    expect(ports.map((port: Manifest) => port.containerPort).sort()).toEqual(
      [config.listen.port, config.admin.listen.port].sort(),
    )
    // Probes, Prometheus and the admin Service reach the pod from outside: a wildcard address, with a token.
    expect(config.admin.listen.host).toBe('0.0.0.0')
    expect(config.admin.tokens.length).toBeGreaterThan(0)
    expect(container.readinessProbe.httpGet.path).toBe('/readyz')
    expect(resolvePort(container.readinessProbe.httpGet.port, ports)).toBe(config.admin.listen.port)
    expect(container.livenessProbe.httpGet.path).toBe('/healthz')
    expect(resolvePort(container.livenessProbe.httpGet.port, ports)).toBe(config.admin.listen.port)

    const annotations = deployment.spec.template.metadata.annotations
    expect(Number(annotations['prometheus.io/port'])).toBe(config.admin.listen.port)
    const [scrape] = documents(await read('prometheus/scrape-kubernetes.yaml'))
    const relabel = scrape.scrape_configs[0].relabel_configs
    const keep = (label: string) =>
      relabel.find((rule: Manifest) => rule.action === 'keep' && rule.source_labels[0] === label)?.regex
    expect(resolvePort(keep('__meta_kubernetes_pod_container_port_name'), ports)).toBe(
      config.admin.listen.port,
    )
    expect(keep('__meta_kubernetes_pod_label_app_kubernetes_io_name')).toBe(
      podLabels()['app.kubernetes.io/name'],
    )
  })

  it('has Services that select the pods and target the proxy and admin ports', () => {
    const targets = byKind('Service').flatMap((service) => {
      expect(containsAll(podLabels(), service.spec.selector)).toBe(true)
      return service.spec.ports.map((port: Manifest) => resolvePort(port.targetPort, container.ports))
    })
    expect(targets.sort()).toEqual([config.listen.port, config.admin.listen.port].sort())
  })

  it('keeps replicas through disruptions and terminations', () => {
    const [budget] = byKind('PodDisruptionBudget')
    expect(containsAll(podLabels(), budget.spec.selector.matchLabels)).toBe(true)
    expect(containsAll(podLabels(), deployment.spec.selector.matchLabels)).toBe(true)
    expect(deployment.spec.replicas).toBeGreaterThanOrEqual(2)
    expect(budget.spec.maxUnavailable).toBeLessThan(deployment.spec.replicas)
    // The kubelet kills at terminationGracePeriodSeconds, counted from the start of preStop.
    const [sleep, preStop] = container.lifecycle.preStop.exec.command
    expect(sleep).toBe('sleep')
    const needed = Number(preStop) + (config.shutdown.delay + config.shutdown.grace) / 1000
    expect(config.shutdown.delay).toBeGreaterThan(0)
    expect(deployment.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(needed)
  })

  it('gives the read-only pod a writable volume where each replica keeps its local copy of the state', () => {
    expect(container.securityContext.readOnlyRootFilesystem).toBe(true)
    const file = config.state.redis?.lastStateFile
    expect(file).toBeTruthy()
    const mount = container.volumeMounts.find(
      (candidate: Manifest) => !candidate.readOnly && dirname(file!) === candidate.mountPath,
    )
    expect(mount, `a writable mount at ${dirname(file!)}`).toBeTruthy()
    const volume = deployment.spec.template.spec.volumes.find(
      (candidate: Manifest) => candidate.name === mount.name,
    )
    // Kept across a container restart, the case the copy is for.
    expect(volume.emptyDir ?? volume.persistentVolumeClaim).toBeTruthy()
  })

  it('runs as the image’s non-root user, the Secret kept out of kustomization', async () => {
    const security = deployment.spec.template.spec.securityContext
    expect(security.runAsNonRoot).toBe(true)
    expect(security.runAsUser).toBe(IMAGE_UID)
    const [kustomization] = documents(await read('kubernetes/kustomization.yaml'))
    for (const resource of kustomization.resources) {
      expect(existsSync(join(DEPLOY, 'kubernetes', resource)), resource).toBe(true)
    }
    expect(kustomization.resources).not.toContain('secret.yaml')
  })
})

// PromQL words that are not metric names.
const PROMQL_WORDS = new Set([
  'and',
  'or',
  'unless',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'offset',
  'inf',
  'nan',
])
// Series Prometheus makes itself for every scrape.
const PROMETHEUS_SERIES = new Set(['up'])

/** The metric names a PromQL expression selects: strings, label matchers, ranges, label lists and functions out. */
function metricNames(expression: string): string[] {
  const bare = expression
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '')
  const words = [...bare.matchAll(/(?<![\w.:$])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()/g)].map(([word]) => word)
  return words.filter((word) => !PROMQL_WORDS.has(word.toLowerCase()))
}

describe('every metric the alerts and the dashboard query exists in the app', () => {
  let upstream: TestServer
  let proxy: TestProxy
  const exported = new Set<string>()
  const alertRules: Manifest[] = []
  const expressions: { where: string; expr: string }[] = []

  beforeAll(async () => {
    upstream = await echoUpstream('blue')
    proxy = await startProxy({ blue: [upstream.url], green: [] })
    const exposition = await (await fetch(`${proxy.admin}/metrics`)).text()
    for (const [, name = '', type] of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      exported.add(name)
      const suffixes = { histogram: ['_bucket', '_sum', '_count'], summary: ['_sum', '_count'] }[type!] ?? []
      for (const suffix of suffixes) exported.add(`${name}${suffix}`)
    }

    const [alerts] = documents(await read('prometheus/alerts.yaml'))
    for (const group of alerts.groups) alertRules.push(...group.rules)
    for (const rule of alertRules) expressions.push({ where: `alert ${rule.alert}`, expr: rule.expr })
    const dashboard = JSON.parse(await read('grafana/bluegreen-dashboard.json'))
    for (const panel of dashboard.panels) {
      for (const target of panel.targets)
        expressions.push({ where: `panel "${panel.title}"`, expr: target.expr })
    }
    for (const annotation of dashboard.annotations.list) {
      if (annotation.expr) expressions.push({ where: `annotation ${annotation.name}`, expr: annotation.expr })
    }
    for (const variable of dashboard.templating.list) {
      const query = typeof variable.query === 'string' ? variable.query : variable.query?.query
      const metric = /^label_values\(\s*([A-Za-z_:][\w:]*)/.exec(query ?? '')?.[1]
      if (metric) expressions.push({ where: `variable ${variable.name}`, expr: metric })
    }
  })

  afterAll(async () => {
    await proxy?.close()
    await upstream?.close()
  })

  it('the registry exports the contract’s metrics', () => {
    for (const name of [
      'bluegreen_requests_total',
      'bluegreen_request_duration_seconds_bucket',
      'bluegreen_state_store_reachable',
    ]) {
      expect(exported).toContain(name)
    }
  })

  it('reads metric names out of PromQL', () => {
    expect(
      metricNames(
        'histogram_quantile(0.99, sum by (color, le) (rate(bluegreen_request_duration_seconds_bucket{job=~"$job"}[$__rate_interval]))) > 1e3 and on (job) group_right up offset 5m',
      ),
    ).toEqual(['bluegreen_request_duration_seconds_bucket', 'up'])
  })

  it('every name in every query is exported', () => {
    expect(expressions.length).toBeGreaterThan(10)
    for (const { where, expr } of expressions) {
      const names = metricNames(expr)
      expect(names.length, `${where} names no metric: ${expr}`).toBeGreaterThan(0)
      for (const name of names) {
        expect(exported.has(name) || PROMETHEUS_SERIES.has(name), `${where}: ${name} is not exported`).toBe(
          true,
        )
      }
    }
  })

  it('the alerts cover errors per color, a replica behind, Redis unreachable and rollbacks', () => {
    for (const rule of alertRules) {
      expect(rule.alert).toMatch(/^BlueGreen/)
      expect(['warning', 'critical']).toContain(rule.labels.severity)
      expect(rule.annotations.summary).toBeTruthy()
    }
    const expressionOf = (pattern: RegExp) => alertRules.find((rule) => pattern.test(rule.expr))
    expect(
      expressionOf(/by \(job, color\) \(rate\(bluegreen_requests_total\{status_class="5xx"\}/),
    ).toBeDefined()
    expect(expressionOf(/max by \(job\) \(bluegreen_state_generation\)/)).toBeDefined()
    expect(expressionOf(/^bluegreen_state_store_reachable == 0$/)).toBeDefined()
    expect(expressionOf(/bluegreen_switches_total\{trigger="rollback"\}/)).toBeDefined()
  })

  it('the `up` alert watches the job the scrape configs define', async () => {
    const jobs = new Set<string>()
    for (const file of ['prometheus/prometheus.yaml', 'prometheus/scrape-kubernetes.yaml']) {
      const [prometheus] = documents(await read(file))
      for (const job of prometheus.scrape_configs) jobs.add(job.job_name)
    }
    for (const rule of alertRules.filter((candidate) => /\bup\{/.test(candidate.expr))) {
      expect(jobs).toContain(/job="([^"]+)"/.exec(rule.expr)?.[1])
    }
  })

  it('the dashboard shows rate, error ratio and p99 per color, the active color, weights and switches', () => {
    const all = expressions.filter(({ where }) => where.startsWith('panel')).map(({ expr }) => expr)
    const has = (pattern: RegExp) => all.some((expr) => pattern.test(expr))
    expect(has(/sum by \(color\) \(rate\(bluegreen_requests_total\{job=~"\$job"\}/)).toBe(true)
    expect(has(/status_class="5xx".*\/\s*sum by \(color\)/)).toBe(true)
    expect(has(/histogram_quantile\(0\.99, sum by \(color, le\)/)).toBe(true)
    expect(has(/bluegreen_active_color/)).toBe(true)
    expect(has(/bluegreen_traffic_weight/)).toBe(true)
    expect(has(/by \(trigger\) \(increase\(bluegreen_switches_total/)).toBe(true)
  })
})

/** A command-line tool, when this machine has it: CI need not, so these checks are extras, skipped with the reason. */
function tool(name: string, versionArgs: string[]): string | undefined {
  const probe = spawnSync(name, versionArgs, { stdio: 'ignore' })
  return probe.error || probe.status !== 0 ? `${name} is not installed` : undefined
}
const noPromtool = tool('promtool', ['--version'])
const noKubectl = tool('kubectl', ['version', '--client'])

describe('the examples pass their own tools, where installed', () => {
  it.skipIf(noPromtool)(
    `promtool check rules alerts.yaml${noPromtool ? ` (skipped: ${noPromtool})` : ''}`,
    () => {
      const output = execFileSync('promtool', ['check', 'rules', join(DEPLOY, 'prometheus/alerts.yaml')], {
        encoding: 'utf8',
      })
      expect(output).toMatch(/SUCCESS/)
    },
  )

  it.skipIf(noKubectl)(
    `kubectl kustomize deploy/kubernetes${noKubectl ? ` (skipped: ${noKubectl})` : ''}`,
    () => {
      const output = execFileSync('kubectl', ['kustomize', join(DEPLOY, 'kubernetes')], { encoding: 'utf8' })
      const kinds = documents(output).map((manifest) => manifest.kind)
      expect(kinds.sort()).toEqual(['ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Service', 'Service'])
    },
  )
})
