// Takes docs/console.png, the README's picture of the console: a demo proxy with a progressive rollout held at a
// manual gate, traffic flowing (green a little slower and failing now and then), a share of it mirrored (green
// answering one path differently), and the page in Debian's chromium.
//   node scripts/console-screenshot.ts            (about a minute: the charts need some traffic history)
//   CHROMIUM=/path/to/chrome DURATION=20 node scripts/console-screenshot.ts

import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { startApp } from '../src/app.ts'
import { buildConfig } from '../src/config/schema.ts'
import { createLogger } from '../src/log.ts'

const seconds = Number(process.env.DURATION ?? 60)
const output = new URL('../docs/console.png', import.meta.url).pathname

function upstream(color: 'blue' | 'green', slowMs: number, failEvery: number) {
  let count = 0
  const server = createServer((req, res) => {
    const fail = failEvery > 0 && ++count % failEvery === 0
    // Both colors answer alike, except that green has renamed a field on /api/users (what the mirror finds).
    const path = (req.url ?? '/').split('?')[0]
    const user = color === 'green' && path === '/api/users' ? { displayName: 'Ann' } : { name: 'Ann' }
    setTimeout(() => {
      res.writeHead(fail ? 500 : 200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ path, user }))
    }, Math.random() * slowMs)
  })
  return new Promise<{ url: string; close: () => void }>((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        close: () => server.close(),
      }),
    ),
  )
}

const dir = mkdtempSync(join(tmpdir(), 'bluegreen-screenshot-'))
const blue = await upstream('blue', 20, 0)
const green = await upstream('green', 60, 150)
const config = buildConfig(
  {
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0' },
    pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
    state: { store: 'file', path: join(dir, 'state.json') },
    rollback: { maxErrorRatio: 0.05, maxP99: '250ms', minRequests: 20, window: '30s' },
  },
  process.env,
)
const app = await startApp(config, createLogger({ level: 'warn', sync: true }))
const proxy = `http://127.0.0.1:${app.proxyAddress.port}`
const admin = `http://127.0.0.1:${app.adminAddress.port}`

async function post(path: string, body: unknown): Promise<void> {
  const response = await fetch(`${admin}${path}`, { method: 'POST', body: JSON.stringify(body) })
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`)
}

// Some history on blue alone, then the rollout: 10% for a third of the time, then 30% held at a manual gate.
let running = true
const paths = ['/', '/api/items', '/api/users', '/api/items']
const traffic = (async () => {
  while (running) {
    await Promise.all(
      paths.map((path) =>
        fetch(`${proxy}${path}`)
          .then((r) => r.arrayBuffer())
          .catch(() => {}),
      ),
    )
    await new Promise((resolve) => setTimeout(resolve, 40))
  }
})()
await post('/mirror', { percent: 20 })
await new Promise((resolve) => setTimeout(resolve, (seconds * 1000) / 3))
await post('/rollout', {
  to: 'green',
  steps: [10, { weight: 30, gate: 'manual' }, 60, 100],
  stepSeconds: Math.max(1, Math.round(seconds / 3)),
  reason: 'release 2.4.0',
})
await new Promise((resolve) => setTimeout(resolve, (seconds * 2000) / 3))

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
})
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 })
  await page.goto(admin)
  await page.getByRole('status', { name: 'Active color' }).waitFor()
  await page.locator('[data-chart="green-requests/s"]').waitFor()
  await page.locator('#mirror-card[data-answered="200"]').waitFor({ state: 'attached' })
  await page.waitForTimeout(1500)
  await page.screenshot({ path: output, fullPage: true })
  console.log(`wrote ${output}`)
} finally {
  running = false
  await traffic
  await browser.close()
  await app.close()
  blue.close()
  green.close()
  rmSync(dir, { recursive: true, force: true })
}
