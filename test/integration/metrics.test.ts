import { spawnSync } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminPost } from '../helpers/admin.ts'
import { parseMetrics } from '../helpers/metrics.ts'
import {
  echoUpstream,
  refusedUrl,
  startProxy,
  startServer,
  type TestProxy,
  type TestServer,
} from '../helpers/servers.ts'

describe('metrics', () => {
  let blue: TestServer
  let green: TestServer
  let proxy: TestProxy

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    green = await startServer((req, res) => {
      res.writeHead(req.url === '/' ? 200 : 503)
      res.end('green')
    })
    proxy = await startProxy({ blue: [blue.url], green: [green.url] }, { rollback: { enabled: false } })
  })

  afterAll(async () => {
    await proxy?.close()
    await blue?.close()
    await green?.close()
  })

  async function scrape(): Promise<Map<string, number>> {
    const response = await fetch(`${proxy.admin}/metrics`)
    expect(response.headers.get('content-type')).toContain('text/plain')
    return parseMetrics(await response.text())
  }

  it('counts requests and latency per color and status class, and the state gauges follow a switch', async () => {
    const before = await scrape()
    expect(before.get('bluegreen_active_color{color="blue"}')).toBe(1)
    expect(before.get('bluegreen_traffic_weight{color="green"}')).toBe(0)
    for (let i = 0; i < 7; i++) await (await fetch(`${proxy.url}/b/${i}`)).arrayBuffer()
    await adminPost(proxy.admin, '/switch', { to: 'green' })
    for (let i = 0; i < 3; i++) await (await fetch(`${proxy.url}/fail/${i}`)).arrayBuffer()
    const after = await scrape()
    const delta = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0)
    expect(delta('bluegreen_requests_total{color="blue",status_class="2xx"}')).toBe(7)
    expect(delta('bluegreen_requests_total{color="green",status_class="5xx"}')).toBe(3)
    expect(delta('bluegreen_request_duration_seconds_count{color="blue"}')).toBe(7)
    expect(delta('bluegreen_request_duration_seconds_count{color="green"}')).toBe(3)
    // Every request is under the largest finite bucket, and the +Inf bucket holds them all.
    expect(after.get('bluegreen_request_duration_seconds_bucket{le="10",color="blue"}')).toBe(
      after.get('bluegreen_request_duration_seconds_count{color="blue"}'),
    )
    expect(after.get('bluegreen_active_color{color="green"}')).toBe(1)
    expect(after.get('bluegreen_active_color{color="blue"}')).toBe(0)
    expect(after.get('bluegreen_traffic_weight{color="green"}')).toBe(100)
    expect(after.get('bluegreen_state_generation')).toBe(1)
    expect(delta('bluegreen_switches_total{trigger="admin"}')).toBe(1)
    expect(after.get(`bluegreen_upstream_healthy{color="green",upstream="${green.url}"}`)).toBe(1)
    // The process's own metrics are there too.
    expect(after.has('process_resident_memory_bytes')).toBe(true)
  })

  const promtool = spawnSync('sh', ['-c', 'command -v promtool']).status === 0
  /** What `promtool check metrics` finds wrong with an exposition. */
  function promtoolProblems(exposition: string): string[] {
    const checked = spawnSync('promtool', ['check', 'metrics'], { input: exposition, encoding: 'utf8' })
    const problems = `${checked.stdout}${checked.stderr}`.split('\n').filter((line) => line.trim() !== '')
    // prom-client's own nodejs_active_*_total gauges break a naming rule; ours must break none.
    return problems.filter((line) => !/^nodejs_active_\w+_total /.test(line))
  }

  it.skipIf(!promtool)('passes promtool check metrics (where promtool is installed)', async () => {
    expect(promtoolProblems(await (await fetch(`${proxy.admin}/metrics`)).text())).toEqual([])
  })

  it('counts retries by color and the reason of the failure before them', async () => {
    const retrying = await startProxy(
      { blue: [await refusedUrl(), blue.url], green: [] },
      { rollback: { enabled: false } },
    )
    try {
      // Round-robin starts at the refused upstream: the first request is tried again on the live one.
      expect((await fetch(`${retrying.url}/`)).status).toBe(200)
      const exposition = await (await fetch(`${retrying.admin}/metrics`)).text()
      const samples = parseMetrics(exposition)
      expect(samples.get('bluegreen_upstream_errors_total{color="blue",reason="refused"}')).toBe(1)
      expect(samples.get('bluegreen_upstream_retries_total{color="blue",reason="refused"}')).toBe(1)
      expect(exposition).toContain('# TYPE bluegreen_upstream_retries_denied_total counter')
      if (promtool) expect(promtoolProblems(exposition)).toEqual([])
    } finally {
      await retrying.close()
    }
  })

  it('counts upstream errors by color and reason', async () => {
    const dead = await startServer(() => {})
    const url = dead.url
    await dead.close()
    const lonely = await startProxy({ blue: [url], green: [] }, { rollback: { enabled: false } })
    try {
      const response = await fetch(`${lonely.url}/`)
      expect(response.status).toBe(502)
      const samples = parseMetrics(await (await fetch(`${lonely.admin}/metrics`)).text())
      expect(
        samples.get('bluegreen_upstream_errors_total{color="blue",reason="refused"}'),
      ).toBeGreaterThanOrEqual(1)
      expect(samples.get('bluegreen_requests_total{color="blue",status_class="5xx"}')).toBe(1)
    } finally {
      await lonely.close()
    }
  })
})
