import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { callAdmin } from '../helpers/admin.ts'
import {
  activeColor,
  CHROMIUM_MISSING,
  confirmDialog,
  launchChromium,
  openConsole as openOn,
  PATIENCE,
  SKIPPED,
  servedBy,
} from '../helpers/console.ts'
import { eventually } from '../helpers/eventually.ts'
import { startServer, type TestServer, useColorRig } from '../helpers/servers.ts'
import { steadyTraffic } from '../helpers/traffic.ts'

// The console in a real browser (Debian's chromium, driven by playwright-core, which downloads nothing), found by
// role and accessible name as a screen reader would find it. What a click did is checked through the proxy and the
// admin API, never through the page alone. One browser for the file; a context (a fresh profile) per test.
// console-release.test.ts drives the mirror, the standby and "Promote to 100%".

const TOKEN = 'console-test-token-0123456789'

let browser: Browser

beforeAll(async () => {
  if (CHROMIUM_MISSING) return
  browser = await launchChromium()
})

afterAll(async () => {
  await browser?.close()
})

const openConsole = (admin: string, viewport?: { width: number; height: number }) =>
  openOn(browser, admin, viewport)

async function generation(admin: string): Promise<number> {
  return (await callAdmin<{ generation: number }>(admin, '/state')).body.generation
}

describe.skipIf(CHROMIUM_MISSING)(`the console, without a token${SKIPPED}`, () => {
  // A rollout step moves on without traffic to judge: the rollout test sends none.
  const rig = useColorRig({
    rollback: { maxErrorRatio: 0.05, maxP99: '800ms' },
    rollout: { onLowTraffic: 'proceed' },
  })

  it('is served at / with a strict CSP, and its script and stylesheet under hashed names cached for a year', async () => {
    const page = await fetch(`${rig.proxy.admin}/`, { headers: { 'accept-encoding': 'gzip' } })
    const html = await page.text()
    const csp = page.headers.get('content-security-policy') ?? ''
    expect(csp).toContain("default-src 'none'")
    expect(csp).toContain("script-src 'self'")
    expect(csp).toContain("connect-src 'self'")
    expect(csp).toContain("frame-ancestors 'none'")
    expect(csp).not.toContain('unsafe')
    expect(page.headers.get('content-encoding')).toBe('gzip')
    expect(page.headers.get('cache-control')).toBe('no-cache')
    const assets = [...html.matchAll(/(?:src|href)="(\/console\/[^"]+)"/g)].map((match) => match[1]!)
    // The entry module, the stylesheet, and the modules the entry imports (preloaded).
    expect(assets).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^\/console\/console\.[0-9a-f]{12}\.js$/),
        expect.stringMatching(/^\/console\/console\.[0-9a-f]{12}\.css$/),
        expect.stringMatching(/^\/console\/mirror\.[0-9a-f]{12}\.js$/),
      ]),
    )
    const served = new Map<string, string>()
    for (const asset of assets) {
      expect(asset).toMatch(/^\/console\/[a-z-]+\.[0-9a-f]{12}\.(js|css)$/)
      const response = await fetch(`${rig.proxy.admin}${asset}`)
      expect(response.status).toBe(200)
      expect(response.headers.get('cache-control')).toBe('public, max-age=31536000, immutable')
      served.set(asset, await response.text())
    }
    // Each module imports its siblings under their hashed names, all of them served and preloaded.
    for (const [asset, text] of served) {
      if (!asset.endsWith('.js')) continue
      for (const [, imported] of text.matchAll(/\bfrom\s*'([^']+)'/g)) expect(assets).toContain(imported)
    }
    // Nothing from another origin: every URL in the page is relative, or data: for the empty favicon.
    expect(html).not.toMatch(/(?:src|href)="(?!\/|data:)/)
    // The page is answered only to the admin API's host names, like the API (DNS rebinding).
    const rebound = await callAdmin(rig.proxy.admin, '/', { headers: { host: 'evil.example' } })
    expect(rebound.status).toBe(403)
  })

  it('loads and shows the active color, the weights and the generation, with no script error', async () => {
    const page = await openConsole(rig.proxy.admin)
    expect(await activeColor(page)).toBe('blue')
    await expect
      .poll(() => page.locator('#generation').textContent())
      .toBe(String(await generation(rig.proxy.admin)))
    expect(await page.getByRole('img', { name: /weights: blue 100%, green 0%/ }).count()).toBe(1)
    expect(page.problems).toEqual([])
    await page.context().close()
  })

  it('"Switch to green" then "Confirm" moves the traffic to green', async () => {
    const page = await openConsole(rig.proxy.admin)
    expect(await servedBy(rig.proxy.url)).toBe('blue')
    await confirmDialog(page, 'Switch to green')
    await eventually(async () => (await servedBy(rig.proxy.url)) === 'green', {
      timeout: 10_000,
      message: 'the proxy to serve green',
    })
    await expect.poll(() => activeColor(page), PATIENCE).toBe('green')
    await page.context().close()
    await callAdmin(rig.proxy.admin, '/switch', { body: { to: 'blue' } })
  })

  it('Cancel (or Escape) changes nothing, and the dialog is usable from the keyboard', async () => {
    const page = await openConsole(rig.proxy.admin)
    const before = await generation(rig.proxy.admin)
    await page.getByRole('button', { name: 'Roll back' }).focus()
    await page.keyboard.press('Enter')
    const dialog = page.getByRole('dialog')
    await dialog.waitFor()
    // Focus starts on Cancel, so an Enter pressed twice by accident does nothing.
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Cancel')
    await page.keyboard.press('Escape')
    await dialog.waitFor({ state: 'hidden' })
    await page.getByRole('button', { name: 'Switch to green' }).focus()
    await page.keyboard.press('Enter')
    await dialog.waitFor()
    await page.keyboard.press('Enter')
    await dialog.waitFor({ state: 'hidden' })
    expect(await generation(rig.proxy.admin)).toBe(before)
    expect(await servedBy(rig.proxy.url)).toBe('blue')
    await page.context().close()
  })

  it('two tabs: the stale tab is answered 409, shows the new state, and overwrites nothing', async () => {
    const first = await openConsole(rig.proxy.admin)
    const second = await openConsole(rig.proxy.admin)
    // The second tab's operator opens "Switch to blue" while blue is still live...
    await second.getByRole('button', { name: 'Switch to blue' }).click()
    await second.getByRole('dialog').waitFor()
    // ...meanwhile the first tab switches to green...
    await confirmDialog(first, 'Switch to green')
    await eventually(async () => (await servedBy(rig.proxy.url)) === 'green', { timeout: 10_000 })
    const afterFirst = await generation(rig.proxy.admin)
    // ...and then the second confirms what it saw.
    await second.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click()
    const alert = second.getByRole('alert')
    await expect.poll(() => alert.textContent(), PATIENCE).toContain('BG_GENERATION_CONFLICT')
    expect(await alert.textContent()).toContain('409')
    await expect.poll(() => activeColor(second), PATIENCE).toBe('green')
    expect(await generation(rig.proxy.admin)).toBe(afterFirst)
    expect(await servedBy(rig.proxy.url)).toBe('green')
    await first.context().close()
    await second.context().close()
    await callAdmin(rig.proxy.admin, '/switch', { body: { to: 'blue' } })
  }, 45_000)

  it('the charts move when traffic flows, with the rollback thresholds drawn on them', async () => {
    const page = await openConsole(rig.proxy.admin)
    const line = page.locator('[data-chart="blue-requests/s"]')
    await line.waitFor({ state: 'attached' })
    const figure = page.locator('[data-figure="blue-requests/s"]')
    const before = await line.getAttribute('points')
    const traffic = steadyTraffic(rig.proxy.url, { everyMs: 5 })
    try {
      await eventually(async () => (await line.getAttribute('points')) !== before, {
        timeout: 15_000,
        message: 'the blue requests/s chart to change',
      })
      await eventually(async () => !((await figure.textContent()) ?? '0.00').startsWith('0.00'), {
        timeout: 15_000,
      })
    } finally {
      await traffic.stop()
    }
    // The limits are drawn (a dashed line) and written beside the charts.
    expect(await page.locator('#color-blue line.threshold').count()).toBe(2)
    expect(await page.locator('#color-blue').textContent()).toContain('limit 5.0%')
    expect(await page.locator('#color-blue').textContent()).toContain('limit 800 ms')
    await page.context().close()
  }, 45_000)

  it('starts a rollout from its form, shows it held at its manual gate, and "Promote" then "Confirm" moves it on', async () => {
    const page = await openConsole(rig.proxy.admin)
    await page.getByText('Start a rollout').click()
    await page.getByLabel('To color').selectOption('green')
    await page.getByLabel(/^Steps/).fill('20:manual, 100')
    await page.getByLabel('Seconds per step').fill('1')
    await page.getByLabel('A manual gate not promoted in time').selectOption('abortIfNotApprovedWithin')
    await page.getByLabel('Gate timeout').fill('1h')
    await confirmDialog(page, 'Start rollout')
    const started = await eventually(
      async () =>
        (await callAdmin<{ rollout?: Record<string, unknown> }>(rig.proxy.admin, '/state')).body.rollout,
      { timeout: 10_000, message: 'the rollout to start' },
    )
    expect(started).toMatchObject({
      to: 'green',
      steps: [20, 100],
      stepSeconds: 1,
      gates: [{ type: 'manual' }, null],
      abortIfNotApprovedWithinSeconds: 3600,
    })
    const rollout = page.locator('#rollout')
    await expect.poll(() => rollout.textContent(), { timeout: 15_000 }).toContain('waits for Promote')
    expect(await page.getByRole('list', { name: 'steps' }).textContent()).toContain(
      '20%, manual gate (current)',
    )
    await confirmDialog(page, 'Promote')
    await eventually(async () => (await servedBy(rig.proxy.url)) === 'green', {
      timeout: 10_000,
      message: 'the promoted rollout to send all traffic to green',
    })
    await expect.poll(() => rollout.textContent(), PATIENCE).toContain('completed')
    await page.context().close()
    await callAdmin(rig.proxy.admin, '/switch', { body: { to: 'blue' } })
  }, 45_000)

  it('"Run smoke checks" then "Confirm" shows the result', async () => {
    const page = await openConsole(rig.proxy.admin)
    await page.getByLabel('Color', { exact: true }).selectOption('green')
    await confirmDialog(page, 'Run smoke checks')
    await expect.poll(() => page.locator('#smoke').textContent(), PATIENCE).toContain('passed')
    await page.context().close()
  })

  it('fits a phone screen: nothing wider than the viewport', async () => {
    const page = await openConsole(rig.proxy.admin, { width: 360, height: 740 })
    const width = await page.evaluate(() => document.documentElement.scrollWidth)
    expect(width).toBeLessThanOrEqual(360)
    expect(await page.getByRole('button', { name: 'Roll back' }).isVisible()).toBe(true)
    await page.context().close()
  })

  describe('a page on another origin', () => {
    let other: TestServer

    beforeAll(async () => {
      // What an attacker's page would try, run in the browser from http://127.0.0.1:<another port>.
      other = await startServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/html' })
        res.end('<!doctype html><title>elsewhere</title>')
      })
    })

    afterAll(async () => {
      await other?.close()
    })

    it('cannot drive the admin API: no fetch, no simple request, no form post', async () => {
      const before = await generation(rig.proxy.admin)
      const context = await browser.newContext()
      const page = await context.newPage()
      await page.goto(other.url)
      const admin = rig.proxy.admin
      const outcomes = await page.evaluate(async (admin) => {
        const tries: Record<string, string> = {}
        // A JSON fetch needs a CORS preflight, which the admin API never grants.
        try {
          const response = await fetch(`${admin}/switch`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ to: 'green' }),
          })
          tries.json = `answered ${response.status}`
        } catch (error) {
          tries.json = `blocked: ${(error as Error).name}`
        }
        // A "simple" request is sent without a preflight (the answer is opaque): the Origin check refuses it.
        try {
          await fetch(`${admin}/switch`, {
            method: 'POST',
            mode: 'no-cors',
            headers: { 'content-type': 'text/plain' },
            body: JSON.stringify({ to: 'green' }),
          })
          tries.simple = 'sent'
        } catch (error) {
          tries.simple = `blocked: ${(error as Error).name}`
        }
        // Reading the state is refused to the other page too: no CORS header.
        try {
          await (await fetch(`${admin}/state`)).json()
          tries.read = 'read'
        } catch (error) {
          tries.read = `blocked: ${(error as Error).name}`
        }
        return tries
      }, admin)
      expect(outcomes.json).toMatch(/^blocked/)
      expect(outcomes.read).toMatch(/^blocked/)
      // A form posted to the admin API: the browser navigates to its answer, which is the refusal.
      await page.setContent(
        `<form method="post" action="${admin}/rollback" enctype="text/plain"><input name='{"a":"' value='"}'></form>`,
      )
      const navigation = page.waitForNavigation()
      await page.evaluate(() => document.querySelector('form')!.submit())
      const answer = await navigation
      expect(answer?.status()).toBe(403)
      expect(await page.locator('body').textContent()).toContain('BG_FORBIDDEN')
      await context.close()
      // Nothing changed, and the attempts that reached the API are on record as refused at the door.
      expect(await generation(rig.proxy.admin)).toBe(before)
      expect(await servedBy(rig.proxy.url)).toBe('blue')
      const events = (
        await callAdmin<{ events: { action: string; result: string; code?: string }[] }>(
          admin,
          '/events?limit=5',
        )
      ).body.events
      const refusals = events.filter((event) => event.result === 'refused' && event.code === 'BG_FORBIDDEN')
      expect(refusals.map((event) => event.action).sort()).toEqual(['rollback', 'switch'])
    })

    it('cannot frame the console (frame-ancestors none)', async () => {
      const context = await browser.newContext()
      const page = await context.newPage()
      await page.goto(other.url)
      // setContent returns once the page and its frame have loaded (or failed to).
      await page.setContent(`<iframe src="${rig.proxy.admin}/"></iframe>`)
      const framed = page.frames().find((frame) => frame.url().startsWith(rig.proxy.admin))
      const active = framed
        ? await framed
            .locator('#active')
            .count()
            .catch(() => 0)
        : 0
      expect(active).toBe(0)
      await context.close()
    })
  })
})

describe.skipIf(CHROMIUM_MISSING)(`the console, with a token${SKIPPED}`, () => {
  const rig = useColorRig({ admin: { listen: '127.0.0.1:0', token: TOKEN } })

  it('a wrong token shows the 401 and changes nothing; the right one, kept in session storage only, works', async () => {
    const page = await openConsole(rig.proxy.admin)
    const before = await generation(rig.proxy.admin)
    await page.getByLabel('Admin token').fill('not-the-token')
    await page.getByRole('button', { name: 'Use token' }).click()
    await confirmDialog(page, 'Switch to green')
    const alert = page.getByRole('alert')
    await expect.poll(() => alert.textContent(), PATIENCE).toContain('BG_UNAUTHORIZED')
    expect(await alert.textContent()).toContain('401')
    expect(await generation(rig.proxy.admin)).toBe(before)
    expect(await servedBy(rig.proxy.url)).toBe('blue')

    await page.getByLabel('Admin token').fill(TOKEN)
    await page.getByRole('button', { name: 'Use token' }).click()
    await confirmDialog(page, 'Switch to green')
    await eventually(async () => (await servedBy(rig.proxy.url)) === 'green', { timeout: 10_000 })
    expect(await page.context().cookies()).toEqual([])
    expect(await page.evaluate(() => sessionStorage.getItem('bluegreen-admin-token'))).toBe(TOKEN)
    expect(await page.evaluate(() => localStorage.length)).toBe(0)
    await page.context().close()
  })

  it("shows the mirror's differences (users' data) only once the token is entered", async () => {
    const page = await openConsole(rig.proxy.admin)
    const diffs = page.getByRole('table', { name: /whose answers differed/ })
    await expect.poll(() => diffs.textContent(), PATIENCE).toContain('enter the admin token')
    await page.getByLabel('Admin token').fill(TOKEN)
    await page.getByRole('button', { name: 'Use token' }).click()
    await expect.poll(() => diffs.textContent(), PATIENCE).toContain('No difference kept.')
    expect(page.problems.filter((problem) => !problem.includes('401'))).toEqual([])
    await page.context().close()
  })
})

describe.skipIf(CHROMIUM_MISSING)(`the console, showing what upstreams and callers wrote${SKIPPED}`, () => {
  const rig = useColorRig()
  const MARKUP = '<img src="x" onerror="document.title=\'pwned\'"><b id="injected">bold</b>'

  it('shows a diff body and an audit reason holding markup as text: no element is made of them', async () => {
    // Echo upstreams answer with the request's headers, and blue and green name themselves: every copy differs.
    expect((await callAdmin(rig.proxy.admin, '/mirror', { body: { percent: 100 } })).status).toBe(200)
    const response = await fetch(`${rig.proxy.url}/page`, { headers: { 'x-note': MARKUP } })
    await response.arrayBuffer()
    await eventually(
      async () =>
        (await callAdmin<{ diffs: unknown[] }>(rig.proxy.admin, '/mirror/diffs')).body.diffs.length > 0,
      { message: 'a mirror difference' },
    )
    const weights = await callAdmin(rig.proxy.admin, '/weights', {
      body: { blue: 100, green: 0, reason: MARKUP },
    })
    expect(weights.status).toBe(200)
    const page = await openConsole(rig.proxy.admin)
    const diffs = page.getByRole('table', { name: /whose answers differed/ })
    await expect.poll(() => diffs.textContent(), PATIENCE).toContain('onerror')
    const audit = page.getByRole('table', { name: /Latest change attempts/ })
    await expect.poll(() => audit.textContent(), PATIENCE).toContain('<b id="injected">')
    expect(await page.locator('#injected').count()).toBe(0)
    expect(await page.locator('img[src="x"]').count()).toBe(0)
    expect(await page.title()).not.toBe('pwned')
    await page.context().close()
  })
})
