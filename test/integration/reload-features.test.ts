import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { signature } from '../../src/notify/message.ts'
import { adminGet, adminPost, errorCode } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { type Received, type Receiver, startReceiver } from '../helpers/receiver.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import {
  type ChildProxy,
  spawnProxy,
  startServer,
  type TestServer,
  tempDir,
  writeConfig,
} from '../helpers/servers.ts'

// Reloading the settings of the parts added after reload itself (README "Reloading the configuration"): the notify
// targets, the mirror and standby.keepFor, on `bluegreen serve` as a child process, with a real webhook receiver
// and, for keepFor, both stores (the Redis one with a real redis-server).

const HOUR_MS = 60 * 60 * 1000

interface ReloadAnswer {
  result: string
  changed: string[]
}

interface StandbyView {
  color: string
  since: string
  keepUntil: string
}

interface MirrorStatus {
  percent: number | null
  window: { blue: { compared: number; mismatched: number }; green: { compared: number; mismatched: number } }
  mismatchedRoutes: unknown[]
  config: { compare: { ignore: string[] } }
}

/** An upstream answering JSON that names its color: copies to the other color differ in `$.color`. */
function colorUpstream(color: string): Promise<TestServer> {
  return startServer((req, res) => {
    req.resume()
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ color, path: req.url }))
  })
}

/** Whether a webhook request carries the signature `secret` makes of its body. */
function signedWith(received: Received, secret: string): boolean {
  const timestamp = String(received.headers['x-bluegreen-timestamp'])
  return received.headers['x-bluegreen-signature'] === signature(secret, timestamp, received.body)
}

/** A proxy child process whose config file the test rewrites whole between reloads. */
interface Rig {
  proxy: ChildProxy
  blue: TestServer
  green: TestServer
  /** Writes the base config with these top-level keys (undefined removes one) and reloads it. */
  reload(changes: Record<string, unknown>): Promise<ReloadAnswer>
  /** Switches all traffic to `to`, waiting for the change to apply. */
  switchTo(to: 'blue' | 'green'): Promise<void>
  standby(): Promise<StandbyView | null>
  close(): Promise<void>
}

async function startRig(state: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<Rig> {
  const blue = await colorUpstream('blue')
  const green = await colorUpstream('green')
  const dir = await tempDir('bluegreen-reload-features-')
  let config: Record<string, unknown> = {
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0' },
    pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
    state: { path: join(dir.path, 'state.json'), ...state },
    ...extra,
  }
  const file = await writeConfig(dir.path, config, 'config.json')
  const proxy = await spawnProxy(file)
  await eventually(async () => (await adminGet(proxy.admin, '/readyz')).status === 200, {
    timeout: 15_000,
    message: 'the proxy to load its state',
  })
  return {
    proxy,
    blue,
    green,
    reload: async (changes) => {
      config = { ...config, ...changes }
      await writeConfig(dir.path, config, 'config.json')
      const answer = await adminPost<ReloadAnswer>(proxy.admin, '/reload', {})
      expect(answer.status, JSON.stringify(answer.body)).toBe(200)
      return answer.body
    },
    switchTo: async (to) => {
      const answer = await adminPost(proxy.admin, '/switch', { to, wait: true })
      expect(answer.status, JSON.stringify(answer.body)).toBe(200)
    },
    standby: async () =>
      (await adminGet<{ standby: StandbyView | null }>(proxy.admin, '/state')).body.standby,
    close: async () => {
      await proxy.stop('SIGKILL')
      await Promise.allSettled([blue.close(), green.close()])
      await dir.remove()
    },
  }
}

/** A switch to `to` starts a standby of the other color: how long it is kept for. */
async function keptFor(rig: Rig, to: 'blue' | 'green'): Promise<number> {
  await rig.switchTo(to)
  const standby = await eventually(
    async () => {
      const found = await rig.standby()
      return found?.color === (to === 'blue' ? 'green' : 'blue') && found
    },
    { message: `the ${to === 'blue' ? 'green' : 'blue'} standby` },
  )
  return Date.parse(standby.keepUntil) - Date.parse(standby.since)
}

describe('reloading notify, mirror and standby.keepFor (file store)', () => {
  let rig: Rig
  let first: Receiver
  let second: Receiver

  beforeAll(async () => {
    first = await startReceiver()
    second = await startReceiver()
    rig = await startRig({}, { standby: { keepFor: '1h' }, mirror: { percent: 10 } })
  })
  afterAll(async () => {
    await rig?.close()
    await Promise.allSettled([first?.close(), second?.close()])
  })

  it('standby.keepFor: the next switch keeps the old color for the reloaded time', async () => {
    expect(await keptFor(rig, 'green')).toBe(HOUR_MS)
    const answer = await rig.reload({ standby: { keepFor: '3h' } })
    expect(answer).toMatchObject({ result: 'applied', changed: ['standby.keepFor'] })
    expect(await keptFor(rig, 'blue')).toBe(3 * HOUR_MS)
  })

  it('notify: an added target gets the next switch; a changed secret signs the next one; a removed one gets none', async () => {
    const added = await rig.reload({
      notify: [{ name: 'first', url: first.url, events: ['switch'], secret: 'one' }],
    })
    expect(added.changed).toEqual(['notify'])
    await rig.switchTo('green')
    await eventually(() => first.received.length === 1, { message: 'the switch to reach the added target' })
    const [delivered] = first.bodies<{ event: string; data: { to: { active: string } } }>()
    expect(delivered?.event).toBe('switch')
    expect(signedWith(first.received[0]!, 'one')).toBe(true)

    await rig.reload({ notify: [{ name: 'first', url: first.url, events: ['switch'], secret: 'two' }] })
    await rig.switchTo('blue')
    await eventually(() => first.received.length === 2, { message: 'the next switch to the same target' })
    expect(signedWith(first.received[1]!, 'two')).toBe(true)

    // Replaced by another target: the next switch reaches the new one only.
    await rig.reload({ notify: [{ name: 'second', url: second.url, events: ['switch'] }] })
    await rig.switchTo('green')
    await eventually(() => second.received.length === 1, { message: 'the switch to reach the new target' })
    // Both deliveries would have started together, from the same event.
    await eventually(
      async () => {
        const events = await adminGet<{ events: { action: string; reason: string }[] }>(
          rig.proxy.admin,
          '/events?limit=50',
        )
        return events.body.events.some(
          (event) => event.action === 'notify' && event.reason.includes('second'),
        )
      },
      { message: 'the delivery to be audited' },
    )
    expect(first.received).toHaveLength(2)
    const metrics = await fetch(`${rig.proxy.admin}/metrics`).then((response) => response.text())
    expect(metrics).toContain('bluegreen_notifications_total{target="second",result="delivered"} 1')
    expect(metrics).toContain('bluegreen_notifications_total{target="first",result="delivered"} 2')
  })

  it('notify: a delivery being retried makes its next attempt with the reloaded secret', async () => {
    const target = (secret: string) => ({
      name: 'first',
      url: first.url,
      events: ['switch'],
      secret,
      backoff: '1s',
      retryFor: '1m',
    })
    await rig.reload({ notify: [target('three')] })
    first.received.length = 0
    first.status = 503
    await rig.switchTo('blue')
    await eventually(() => first.received.length === 1, { message: 'the first attempt' })
    await rig.reload({ notify: [target('four')] })
    first.status = 204
    // On a slow machine a retry may come before the reload: the first one after it is signed anew, and delivered.
    await eventually(() => first.received.some((request) => signedWith(request, 'four')), {
      timeout: 15_000,
      message: 'a retry signed with the reloaded secret',
    })
    const attempts = first.received
    expect(new Set(attempts.map((request) => request.headers['x-bluegreen-delivery'])).size).toBe(1)
    expect(signedWith(attempts[0]!, 'three')).toBe(true)
    expect(signedWith(attempts.at(-1)!, 'four')).toBe(true)
  })

  it('notify: a delivery waiting to retry to a removed target ends at once, not retried, counted as dropped', async () => {
    // A retry due only after the test's patience: the drop comes from the reload.
    await rig.reload({ notify: [{ name: 'first', url: first.url, events: ['switch'], backoff: '30s' }] })
    first.received.length = 0
    first.status = 503
    await rig.switchTo('green')
    await eventually(() => first.received.length === 1, { message: 'the first attempt' })
    await rig.reload({ notify: [] })
    const dropped = await eventually(
      async () => {
        const metrics = await fetch(`${rig.proxy.admin}/metrics`).then((response) => response.text())
        return metrics.includes('bluegreen_notifications_total{target="first",result="dropped"} 1') && metrics
      },
      { timeout: 10_000, message: 'the pending delivery to be dropped' },
    )
    expect(dropped).toContain('bluegreen_notifications_total{target="first",result="failed"} 0')
    type Events = { events: { action: string; result: string; message?: string; notification?: unknown }[] }
    const trail = await eventually(async () => {
      const events = await adminGet<Events>(rig.proxy.admin, '/events?limit=50')
      return events.body.events.find(
        (event) =>
          event.action === 'notify' && (event.notification as { result: string }).result === 'dropped',
      )
    })
    expect(trail).toMatchObject({ result: 'refused', message: 'its target was removed by a reload' })
    first.status = 204
  })

  it('mirror: the default share, the comparison rules and the gate apply from the next use', async () => {
    await rig.reload({ mirror: { percent: 100 } })
    const on = await adminPost(rig.proxy.admin, '/mirror', { enabled: true, wait: true })
    expect(on.status, JSON.stringify(on.body)).toBe(200)
    const status = async () => (await adminGet<MirrorStatus>(rig.proxy.admin, '/mirror')).body
    // POST /mirror without a share took the reloaded default.
    expect((await status()).percent).toBe(100)

    // Green is live: every copy goes to blue, which names another color.
    for (let i = 0; i < 5; i++) expect((await fetch(`${rig.proxy.url}/item`)).status).toBe(200)
    await eventually(async () => (await status()).window.blue.mismatched >= 5, {
      message: 'the copies to blue to differ',
    })

    const answer = await rig.reload({ mirror: { percent: 100, compare: { ignore: ['$.color'] } } })
    expect(answer.changed).toEqual(['mirror.compare.ignore'])
    // Counted under the old rules: the figures start again.
    const reset = await status()
    expect(reset.config.compare.ignore).toEqual(['$.color'])
    expect(reset.window.blue).toMatchObject({ compared: 0, mismatched: 0 })
    expect(reset.mismatchedRoutes).toEqual([])
    expect(reset.percent).toBe(100)
    for (let i = 0; i < 5; i++) expect((await fetch(`${rig.proxy.url}/item`)).status).toBe(200)
    const after = await eventually(
      async () => {
        const now = await status()
        return now.window.blue.compared >= 5 && now
      },
      { message: 'the copies to be compared by the new rules' },
    )
    expect(after.window.blue.mismatched).toBe(0)

    // The gate, turned on by a reload, holds the next switch: 5 compared copies are fewer than it asks for.
    await rig.reload({
      mirror: {
        percent: 100,
        compare: { ignore: ['$.color'] },
        gate: { minCompared: 1000, on: { switch: true } },
      },
    })
    const refused = await adminPost(rig.proxy.admin, '/switch', { to: 'blue' })
    expect(refused.status).toBe(412)
    expect(errorCode(refused)).toBe('BG_MIRROR_MISMATCH')
  })
})

describe('reloading standby.keepFor with the Redis store', () => {
  let redis: RedisProcess
  let rig: Rig

  beforeAll(async () => {
    redis = await startRedis()
    rig = await startRig(
      { store: 'redis', redis: { url: redis.url, key: 'bluegreen:reload-keep-for' } },
      { standby: { keepFor: '1h' } },
    )
  })
  afterAll(async () => {
    await rig?.close()
    await redis?.stop()
  })

  it('the CHANGE script stamps the next standby with the reloaded keepFor', async () => {
    expect(await keptFor(rig, 'green')).toBe(HOUR_MS)
    const answer = await rig.reload({ standby: { keepFor: '90m' } })
    expect(answer).toMatchObject({ result: 'applied', changed: ['standby.keepFor'] })
    expect(await keptFor(rig, 'blue')).toBe(90 * 60 * 1000)
  })
})
