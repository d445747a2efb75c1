import { existsSync } from 'node:fs'
import { type Browser, chromium, type Page } from 'playwright-core'
import { expect } from 'vitest'

// The console in a real browser: Debian's chromium driven by playwright-core (which downloads nothing), one browser
// per test file, a context (a fresh profile) per page, everything found by role and accessible name.

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'
export const CHROMIUM_MISSING = !existsSync(CHROMIUM)
/** vitest's skip takes no reason: the reason goes into the name that the report shows as skipped. */
export const SKIPPED = CHROMIUM_MISSING
  ? ` (skipped: no browser at ${CHROMIUM}; apt-get install chromium, or set CHROMIUM to a Chrome or Chromium)`
  : ''
/** expect.poll's default (1 s) is short for a page on a loaded machine. */
export const PATIENCE = { timeout: 10_000 }

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
}

/** A console page in a fresh context, once it shows the active color; its script errors kept in `problems`. */
export async function openConsole(
  browser: Browser,
  admin: string,
  viewport = { width: 1280, height: 900 },
): Promise<Page & { problems: string[] }> {
  const context = await browser.newContext({ viewport })
  const page = (await context.newPage()) as Page & { problems: string[] }
  const problems: string[] = []
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(message.text())
  })
  page.on('pageerror', (error) => problems.push(error.message))
  page.problems = problems
  await page.goto(admin)
  await expect.poll(() => activeColor(page), PATIENCE).toMatch(/^(blue|green)$/)
  return page
}

export async function activeColor(page: Page): Promise<string> {
  return (await page.getByRole('status', { name: 'Active color' }).textContent()) ?? ''
}

/** Clicks a button and then "Confirm" in the dialog it opens. */
export async function confirmDialog(page: Page, button: string): Promise<void> {
  // Exact: "Promote" is not "Promote to 100%".
  await page.getByRole('button', { name: button, exact: true }).click()
  const dialog = page.getByRole('dialog')
  await dialog.waitFor()
  await dialog.getByRole('button', { name: 'Confirm' }).click()
}

/** The color that answers a request through the proxy. */
export async function servedBy(proxy: string, path = '/'): Promise<string | null> {
  const response = await fetch(`${proxy}${path}`)
  await response.arrayBuffer()
  return response.headers.get('x-bluegreen-color')
}
