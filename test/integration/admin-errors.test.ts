import { join } from 'node:path'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AdminServer } from '../../src/admin/server.ts'
import { FileAuditTrail } from '../../src/audit/file-audit.ts'
import { buildConfig } from '../../src/config/schema.ts'
import { Metrics } from '../../src/metrics/registry.ts'
import { buildSnapshot } from '../../src/routing/snapshot.ts'
import { FileStateStore } from '../../src/state/file-store.ts'
import { LocalReplicaRegistry } from '../../src/state/local-replicas.ts'
import type { StateStore } from '../../src/state/store.ts'
import { adminGet, adminPost, errorCode } from '../helpers/admin.ts'
import { tempDir } from '../helpers/servers.ts'

// An admin call that fails in a way nothing expects is a bug in the proxy, not an outage of its store: it must say
// so (500 BG_INTERNAL), leave the stack in the log, record the attempt as such, and leave the admin API serving.
// A bug cannot be had from the real parts, so one is put into a real store: its commit throws a TypeError.

const BUG = "Cannot read properties of undefined (reading 'weights')"

describe('an admin call that fails in a way nothing expects', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>
  let store: FileStateStore
  let admin: AdminServer
  let url: string
  const errorLines: string[] = []

  beforeAll(async () => {
    dir = await tempDir()
    const config = buildConfig(
      {
        admin: { listen: '127.0.0.1:0' },
        pools: { blue: { upstreams: ['http://127.0.0.1:1'] }, green: { upstreams: ['http://127.0.0.1:2'] } },
        state: { path: join(dir.path, 'state.json') },
      },
      {},
    )
    const logger = pino({ level: 'error' }, { write: (line: string) => void errorLines.push(line) })
    store = new FileStateStore({ path: config.state.path, initial: 'blue', logger })
    await store.start()
    const buggy: StateStore = {
      start: () => store.start(),
      current: () => store.current(),
      commit: () => Promise.reject(new TypeError(BUG)),
      change: () => Promise.reject(new TypeError(BUG)),
      previous: () => store.previous(),
      subscribe: (listener) => store.subscribe(listener),
      close: () => store.close(),
    }
    const balance = { blue: 'round-robin', green: 'round-robin' } as const
    admin = new AdminServer({
      config: config.admin,
      pools: config.pools,
      smoke: { config: config.smoke, preserveHost: false },
      logger,
      store: buggy,
      replicas: new LocalReplicaRegistry('test-replica'),
      audit: new FileAuditTrail(join(dir.path, 'state.json.events.jsonl'), 100),
      metrics: new Metrics(() => undefined),
      replicaId: 'test-replica',
      snapshot: () => buildSnapshot(store.current()!, { blue: [], green: [] }, balance),
      readiness: () => ({ ready: true, reasons: [] }),
    })
    const address = await admin.listen()
    url = `http://127.0.0.1:${address.port}`
  })
  afterAll(async () => {
    await admin?.close()
    await store?.close()
    await dir?.remove()
  })

  it('answers 500 BG_INTERNAL, not BG_STATE_UNAVAILABLE, logs the stack and records the attempt so', async () => {
    const reply = await adminPost(url, '/switch', { to: 'green', force: true, reason: 'release 9' })
    expect(reply.status).toBe(500)
    expect(errorCode(reply)).toBe('BG_INTERNAL')
    expect(reply.body).toEqual({
      error: { code: 'BG_INTERNAL', message: 'internal error; see the proxy log' },
    })

    const logged = errorLines.map((line) => JSON.parse(line) as { msg: string; err?: { stack?: string } })
    const failure = logged.find((line) => line.msg === 'admin request failed')
    expect(failure?.err?.stack).toContain(BUG)

    const { body } = await adminGet<{ events: Record<string, unknown>[] }>(url, '/events')
    expect(body.events[0]).toMatchObject({
      action: 'switch',
      result: 'refused',
      code: 'BG_INTERNAL',
      message: BUG,
      reason: 'release 9',
    })
  })

  it('keeps serving: the state is still read, and the store was never touched', async () => {
    const reply = await adminGet(url, '/state')
    expect(reply.status).toBe(200)
    expect(reply.body).toMatchObject({ active: 'blue', generation: 0 })
    expect((await adminGet(url, '/healthz')).status).toBe(200)
  })
})
