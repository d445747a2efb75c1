import { join } from 'node:path'
import pino from 'pino'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AdminServer } from '../../src/admin/server.ts'
import { FileAuditTrail } from '../../src/audit/file-audit.ts'
import { buildConfig } from '../../src/config/schema.ts'
import { Metrics } from '../../src/metrics/registry.ts'
import { buildSnapshot } from '../../src/routing/snapshot.ts'
import { FileStateStore } from '../../src/state/file-store.ts'
import { LocalReplicaRegistry } from '../../src/state/local-replicas.ts'
import { adminGet, adminPost } from '../helpers/admin.ts'
import {
  CHROMIUM_MISSING,
  confirmDialog,
  launchChromium,
  openConsole,
  SKIPPED,
  servedBy,
} from '../helpers/console.ts'
import { eventually } from '../helpers/eventually.ts'
import {
  startProxy,
  startServer,
  type TestProxy,
  type TestServer,
  tempDir,
  useColorRig,
} from '../helpers/servers.ts'

// The console during a release, in a real browser: the mirror panel turned on from the page and showing the field
// green answers differently, the standby after a switch until it is safe to scale down, and "Promote to 100%".
// What a click did is checked through the proxy and the admin API. One browser for the file.

/** Figures the page shows after traffic: the mirror panel is polled every 5 s, so this waits longer than that. */
const SLOW = { timeout: 20_000 }

let browser: Browser

beforeAll(async () => {
  if (CHROMIUM_MISSING) return
  browser = await launchChromium()
})

afterAll(async () => {
  await browser?.close()
})

/** An application whose two colors answer alike, except green names another user on /api/users. */
function application(color: 'blue' | 'green'): Promise<TestServer> {
  return startServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!
    const user = color === 'green' && path === '/api/users' ? 'bob' : 'ann'
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ path, user, items: [1, 2, 3] }))
  })
}

describe.skipIf(CHROMIUM_MISSING)(`the console's mirror panel${SKIPPED}`, () => {
  let blue: TestServer
  let green: TestServer
  let proxy: TestProxy

  beforeAll(async () => {
    blue = await application('blue')
    green = await application('green')
    proxy = await startProxy({ blue: [blue.url], green: [green.url] }, { mirror: { window: '1m' } })
  })

  afterAll(async () => {
    await proxy?.close()
    await blue?.close()
    await green?.close()
  })

  it('turns mirroring on from the page, then shows the route and the field green answers differently', async () => {
    const page = await openConsole(browser, proxy.admin)
    const panel = page.getByRole('region', { name: 'Mirror' })
    await panel.waitFor()
    expect(await panel.textContent()).toContain('no request is copied')

    await page.getByLabel('Share to mirror (%)').fill('100')
    await confirmDialog(page, 'Turn mirroring on')
    const mirrored = await eventually(
      async () => {
        const { body } = await adminGet<{ mirror?: { enabled: boolean; percent: number } }>(
          proxy.admin,
          '/state',
        )
        return body.mirror?.enabled ? body.mirror : undefined
      },
      { timeout: 10_000, message: 'the state to say mirroring is on' },
    )
    expect(mirrored).toEqual({ enabled: true, percent: 100 })

    // Traffic through the proxy: blue answers the clients, green gets the copies.
    for (let round = 0; round < 5; round++) {
      expect(await servedBy(proxy.url, '/api/users')).toBe('blue')
      expect(await servedBy(proxy.url, '/api/items')).toBe('blue')
    }
    const diffs = page.getByRole('table', { name: /whose answers differed/ })
    await expect.poll(() => diffs.textContent(), SLOW).toContain('GET /api/users')
    const text = (await diffs.textContent()) ?? ''
    expect(text).toContain('$.user')
    expect(text).not.toContain('/api/items')
    expect(text).toContain('blue 200 / green 200')
    await expect.poll(() => panel.textContent(), SLOW).toContain('GET /api/users: 5 of 5')
    await expect.poll(() => panel.textContent(), SLOW).toMatch(/to green: 5 of 10 differed \(50\.0%\)/)

    await confirmDialog(page, 'Turn mirroring off')
    await eventually(
      async () =>
        (await adminGet<{ mirror?: { enabled: boolean } }>(proxy.admin, '/state')).body.mirror?.enabled ===
        false,
      { timeout: 10_000, message: 'the state to say mirroring is off' },
    )
    await expect.poll(() => panel.textContent(), SLOW).toContain('no request is copied')
    expect(page.problems).toEqual([])
    await page.context().close()
  }, 60_000)

  it('a stale page turning mirroring on is answered 409 and changes nothing', async () => {
    const page = await openConsole(browser, proxy.admin)
    await page.getByRole('button', { name: 'Turn mirroring on' }).click()
    await page.getByRole('dialog').waitFor()
    // Meanwhile someone else changes the state.
    await adminPost(proxy.admin, '/weights', { blue: 90, green: 10 })
    const { body: before } = await adminGet<{ generation: number }>(proxy.admin, '/state')
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click()
    await expect.poll(() => page.getByRole('alert').textContent(), SLOW).toContain('BG_GENERATION_CONFLICT')
    const { body: after } = await adminGet<{ generation: number; mirror?: { enabled: boolean } }>(
      proxy.admin,
      '/state',
    )
    expect(after.generation).toBe(before.generation)
    expect(after.mirror?.enabled).toBe(false)
    await page.context().close()
    await adminPost(proxy.admin, '/switch', { to: 'blue' })
  }, 45_000)
})

describe.skipIf(CHROMIUM_MISSING)(`the console without a mirror${SKIPPED}`, () => {
  // An admin API built without the mirror (as an embedding may build it) answers GET /mirror 404.
  let dir: Awaited<ReturnType<typeof tempDir>>
  let store: FileStateStore
  let admin: AdminServer
  let url: string

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
    const logger = pino({ level: 'silent' })
    store = new FileStateStore({ path: config.state.path, initial: 'blue', logger })
    await store.start()
    admin = new AdminServer({
      config: config.admin,
      pools: config.pools,
      smoke: { config: config.smoke, preserveHost: false },
      logger,
      store,
      replicas: new LocalReplicaRegistry('test-replica'),
      audit: new FileAuditTrail(join(dir.path, 'state.json.events.jsonl'), 100),
      metrics: new Metrics(() => undefined),
      replicaId: 'test-replica',
      snapshot: () =>
        buildSnapshot(
          store.current()!,
          { blue: [], green: [] },
          { blue: 'round-robin', green: 'round-robin' },
        ),
      readiness: () => ({ ready: true, reasons: [] }),
    })
    url = `http://127.0.0.1:${(await admin.listen()).port}`
  })

  afterAll(async () => {
    await admin?.close()
    await store?.close()
    await dir?.remove()
  })

  it('hides the mirror panel, with no error shown', async () => {
    const mirror = await adminGet(url, '/mirror')
    expect(mirror.status).toBe(404)
    const page = await openConsole(browser, url)
    // The page has had its answer to GET /mirror (the panel starts hidden, and is shown only on a 200).
    await page.locator('#mirror-card[data-answered="404"]').waitFor({ state: 'attached' })
    expect(await page.getByRole('region', { name: 'Mirror' }).count()).toBe(0)
    expect(await page.getByRole('button', { name: 'Turn mirroring on' }).count()).toBe(0)
    expect(await page.getByRole('alert').isVisible()).toBe(false)
    await page.context().close()
  })
})

describe.skipIf(CHROMIUM_MISSING)(`the console during a release${SKIPPED}`, () => {
  // A short standby, so it is over within the test; a rollout step moves on without traffic to judge.
  const rig = useColorRig({ standby: { keepFor: '2s' }, rollout: { onLowTraffic: 'proceed' } })

  it('"Promote to 100%" then "Confirm" sends all traffic to the rollout\'s color at once', async () => {
    await adminPost(rig.proxy.admin, '/rollout', {
      to: 'green',
      steps: [10, { weight: 50, gate: 'manual' }, 100],
      stepSeconds: 60,
    })
    const page = await openConsole(browser, rig.proxy.admin)
    const rollout = page.locator('#rollout')
    await expect.poll(() => rollout.textContent(), SLOW).toContain('running')
    await confirmDialog(page, 'Promote to 100%')
    // At 10% some requests already go to green: wait on the state, then check every request through the proxy.
    const promoted = await eventually(
      async () => {
        const { body } = await adminGet<{ weights: { green: number }; rollout: { status: string } }>(
          rig.proxy.admin,
          '/state',
        )
        return body.weights.green === 100 ? body : undefined
      },
      { timeout: 10_000, message: 'the promoted rollout to give green all the traffic' },
    )
    expect(promoted.rollout.status).toBe('completed')
    for (let request = 0; request < 20; request++) expect(await servedBy(rig.proxy.url)).toBe('green')
    await expect.poll(() => rollout.textContent(), SLOW).toContain('completed')
    // The rollout's buttons go with it.
    expect(await page.getByRole('button', { name: 'Promote to 100%' }).isVisible()).toBe(false)
    await page.context().close()
    await adminPost(rig.proxy.admin, '/switch', { to: 'blue' })
  }, 45_000)

  it('shows the standby color after a switch, and "Safe to scale down: yes" once drained and kept long enough', async () => {
    const page = await openConsole(browser, rig.proxy.admin)
    await confirmDialog(page, 'Switch to green')
    await eventually(async () => (await servedBy(rig.proxy.url)) === 'green', { timeout: 10_000 })
    const standby = page.locator('#standby')
    await expect.poll(() => standby.textContent(), SLOW).toContain('blue on standby since')
    const safe = page.locator('[data-standby="safe"]')
    await expect.poll(() => safe.textContent(), SLOW).toBe('yes')
    const text = (await standby.textContent()) ?? ''
    expect(text).toMatch(/Drainedon 1 of 1 replica/)
    expect(text).toContain('(over)')
    const { body } = await adminGet<{ standby: { color: string; safeToScaleDown: boolean } }>(
      rig.proxy.admin,
      '/state',
    )
    expect(body.standby).toMatchObject({ color: 'blue', safeToScaleDown: true })
    expect(page.problems).toEqual([])
    await page.context().close()
  }, 45_000)

  it('shows a run of the smoke checks made elsewhere (the smoke live event), and who asked for it', async () => {
    const page = await openConsole(browser, rig.proxy.admin)
    const smoke = page.locator('#smoke')
    expect(await smoke.textContent()).toContain('Not run from this page yet')
    // Run through the API, not the page: only the live event can tell the page.
    const run = await adminPost(rig.proxy.admin, '/smoke', { color: 'green' })
    expect(run.status).toBe(200)
    await expect.poll(() => smoke.textContent(), SLOW).toContain('green: passed')
    expect(await smoke.textContent()).toContain('run on demand')
    await page.context().close()
  })
})
