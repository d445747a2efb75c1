import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createServer as createTcpServer } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EventStream } from '../../src/admin/event-stream.ts'
import type { AuditEvent } from '../../src/audit/audit.ts'
import { FileAuditTrail } from '../../src/audit/file-audit.ts'
import { buildConfig } from '../../src/config/schema.ts'
import { silentLogger } from '../../src/log.ts'
import { Metrics } from '../../src/metrics/registry.ts'
import { Notifier } from '../../src/notify/notifier.ts'
import { claimInDirectory } from '../../src/state/claims.ts'
import { eventually } from '../helpers/eventually.ts'
import { parseMetrics } from '../helpers/metrics.ts'
import { type Receiver, startReceiver } from '../helpers/receiver.ts'
import { tempDir } from '../helpers/servers.ts'

// The notifier on its own, with a real event stream, a real audit trail on disk and a real receiver that hangs:
// what a full queue and a shutdown do, which the whole proxy would take hundreds of changes to show.

function switched(generation: number): AuditEvent {
  return {
    at: new Date().toISOString(),
    actor: 'token:ci',
    address: '127.0.0.1',
    action: 'switch',
    from: { active: 'blue', weights: { blue: 100, green: 0 }, generation: generation - 1 },
    to: { active: 'green', weights: { blue: 0, green: 100 } },
    reason: 'release',
    result: 'accepted',
    generation,
  }
}

describe('Notifier', () => {
  let receiver: Receiver
  let dir: Awaited<ReturnType<typeof tempDir>>
  beforeAll(async () => {
    receiver = await startReceiver()
    receiver.hold = true
    dir = await tempDir()
  })
  afterAll(async () => {
    await receiver?.close()
    await dir?.remove()
  })

  it('drops what a target cannot take, and does not let a hanging receiver hold up its shutdown', async () => {
    const config = buildConfig(
      {
        pools: { blue: { upstreams: ['http://127.0.0.1:1'] }, green: { upstreams: [] } },
        notify: [{ name: 'slow', url: receiver.url, timeout: '60s', retryFor: '5m' }],
      },
      {},
    )
    const events = new EventStream()
    const audit = new FileAuditTrail(`${dir.path}/audit.jsonl`, 100)
    const metrics = new Metrics(() => undefined)
    const notifier = new Notifier({
      targets: config.notify,
      events,
      audit,
      metrics,
      logger: silentLogger(),
      replicaId: 'replica-1',
      claim: async () => true,
      maxPending: 1,
      closeWithin: 200,
    })
    events.publish('audit', switched(2))
    await eventually(() => receiver.received.length === 1, { message: 'the first delivery to be under way' })
    events.publish('audit', switched(3))
    const dropped = await eventually(
      async () => (await audit.recent(10)).find((event) => event.notification?.result === 'dropped'),
      { message: 'the second to be dropped' },
    )
    expect(dropped).toMatchObject({
      action: 'notify',
      result: 'refused',
      notification: { target: 'slow', event: 'switch', id: 'switch-g3', result: 'dropped', attempt: 0 },
    })
    const counted = parseMetrics(await metrics.registry.metrics())
    expect(counted.get('bluegreen_notifications_total{target="slow",result="dropped"}')).toBe(1)
    // The first is still waiting on its 60 s timeout: closing cuts it off after closeWithin.
    const closing = notifier.close().then(() => 'closed')
    const outcome = await Promise.race([
      closing,
      new Promise((resolve) => setTimeout(() => resolve('still closing'), 10_000)),
    ])
    expect(outcome).toBe('closed')
    expect(receiver.received).toHaveLength(1)
    await audit.close()
  })

  it('bounds an attempt to a receiver that answers without end, or never ends its headers', async () => {
    // One answers 200 and streams its body forever; one takes the connection and writes a header line a second.
    let endlessBytes = 0
    const endless: Server = createServer((_req, res) => {
      res.writeHead(200)
      const chunk = Buffer.alloc(16_384, 'x')
      const timer = setInterval(() => {
        endlessBytes += chunk.length
        res.write(chunk)
      }, 1)
      res.on('close', () => clearInterval(timer))
    })
    const trickle = createTcpServer((socket) => {
      socket.on('error', () => {})
      socket.write('HTTP/1.1 200 OK\r\n')
      const timer = setInterval(() => socket.write('x-more: 1\r\n'), 200)
      socket.on('close', () => clearInterval(timer))
    })
    for (const server of [endless, trickle]) server.listen(0, '127.0.0.1')
    await Promise.all([once(endless, 'listening'), once(trickle, 'listening')])
    const url = (server: { address(): unknown }) =>
      `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`
    const config = buildConfig(
      {
        pools: { blue: { upstreams: ['http://127.0.0.1:1'] }, green: { upstreams: [] } },
        notify: [
          { name: 'endless', url: url(endless), timeout: '2s', retryFor: '0s' },
          { name: 'trickle', url: url(trickle), timeout: '2s', retryFor: '0s' },
        ],
      },
      {},
    )
    const events = new EventStream()
    const audit = new FileAuditTrail(`${dir.path}/bounded.jsonl`, 100)
    const notifier = new Notifier({
      targets: config.notify,
      events,
      audit,
      metrics: new Metrics(() => undefined),
      logger: silentLogger(),
      replicaId: 'replica-1',
      claim: async () => true,
    })
    try {
      events.publish('audit', switched(7))
      const outcomes = await eventually(
        async () => {
          const recent = (await audit.recent(10)).filter((event) => event.notification?.id === 'switch-g7')
          return recent.length === 2 ? recent : undefined
        },
        { timeout: 15_000, message: 'both attempts to end' },
      )
      const byTarget = Object.fromEntries(outcomes.map((event) => [event.notification!.target, event]))
      // The endless answer is a 2xx: delivered, its body read no further than a bounded amount and dropped.
      expect(byTarget.endless).toMatchObject({ notification: { result: 'delivered', status: 200 } })
      expect(endlessBytes).toBeLessThan(64 * 1024 * 1024)
      // Headers that never end: the attempt fails on the target's timeout.
      expect(byTarget.trickle).toMatchObject({ notification: { result: 'failed' } })
      expect(byTarget.trickle!.message).toMatch(/timeout|aborted/i)
    } finally {
      await notifier.close()
      await audit.close()
      endless.closeAllConnections()
      await new Promise((resolve) => endless.close(resolve))
      await new Promise((resolve) => trickle.close(resolve))
    }
  })

  it('sends what two processes on one state file both observe once: the standby over, claimed in a file', async () => {
    const chat = await startReceiver()
    try {
      const config = buildConfig(
        {
          pools: { blue: { upstreams: ['http://127.0.0.1:1'] }, green: { upstreams: [] } },
          notify: [{ name: 'chat', url: chat.url, format: 'slack', events: ['standby-over'] }],
        },
        {},
      )
      const claims = `${dir.path}/state.json.claims`
      const processes = ['process-1', 'process-2'].map((replicaId) => {
        const events = new EventStream()
        const audit = new FileAuditTrail(`${dir.path}/${replicaId}.jsonl`, 100)
        const notifier = new Notifier({
          targets: config.notify,
          events,
          audit,
          metrics: new Metrics(() => undefined),
          logger: silentLogger(),
          replicaId,
          claim: (id) => claimInDirectory(claims, id, replicaId),
        })
        return { events, audit, notifier }
      })
      const over = { phase: 'over', color: 'blue', since: '2026-11-30T10:00:00.000Z', safeToScaleDown: true }
      for (const { events } of processes) {
        events.publish('standby', { ...over, phase: 'started' })
        events.publish('standby', { ...over, phase: 'drained' })
        events.publish('standby', over)
      }
      await eventually(() => chat.received.length > 0, { message: 'the standby-over notification' })
      const outcomes = async () => (await Promise.all(processes.map(({ audit }) => audit.recent(10)))).flat()
      await eventually(async () => (await outcomes()).length > 0, { message: 'its outcome to be audited' })
      expect(await outcomes()).toHaveLength(1)
      expect(chat.received).toHaveLength(1)
      expect(chat.bodies<{ text: string }>()[0]!.text).toMatch(
        /^standby over: blue .* safe to scale it down$/,
      )
      for (const { notifier, audit } of processes) {
        await notifier.close()
        await audit.close()
      }
    } finally {
      await chat.close()
    }
  })
})
