import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminGet, adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { startProxy, startServer, type TestProxy, type TestServer } from '../helpers/servers.ts'

// The release guard's automatic rollback to a color whose standby is over: that color may have been scaled down,
// so, as for an operator's rollback (README "Smoke checks", "After standby"), it must pass its smoke checks first.
// keepFor (1 s) shorter than the watch (30 s) is what lets the two meet.

interface View {
  active: string
  generation: number
  standby: { color: string; keepUntil: string } | null
}

interface AuditLine {
  action: string
  result: string
  code?: string
  actor: string
  reason: string
}

describe('an automatic rollback to a retired color', () => {
  let blue: TestServer
  let green: TestServer
  let proxy: TestProxy
  /** Blue's smoke check answer: it was retired and is broken until the test mends it. */
  let blueSmoke = 200

  beforeAll(async () => {
    blue = await startServer((req, res) => {
      res.writeHead(req.url === '/smoke' ? blueSmoke : 200)
      res.end('blue')
    })
    // Green passes its health probe and smoke check but fails real traffic: the guard wants to roll it back.
    green = await startServer((req, res) => {
      res.writeHead(req.url === '/work' ? 500 : 200)
      res.end('green')
    })
    proxy = await startProxy(
      { blue: [blue.url], green: [green.url] },
      {
        standby: { keepFor: '1s' },
        rollback: {
          window: '10s',
          evaluateEvery: '100ms',
          minRequests: 10,
          maxErrorRatio: 0.1,
          watch: '30s',
        },
        smoke: { checks: [{ name: 'ready', path: '/smoke' }], on: { rolloutStep: false } },
      },
    )
  })

  afterAll(async () => {
    await proxy?.close()
    await blue?.close()
    await green?.close()
  })

  const stateOf = async () => (await adminGet<View>(proxy.admin, '/state')).body
  const audit = async () =>
    (await adminGet<{ events: AuditLine[] }>(proxy.admin, '/events?limit=50')).body.events

  it('runs its smoke checks first: refused (audited once) while they fail, made once they pass', async () => {
    const flipped = await adminPost(proxy.admin, '/switch', { to: 'green' })
    expect(flipped.status, JSON.stringify(flipped.body)).toBe(200)
    const switched = await stateOf()
    expect(switched.standby).toMatchObject({ color: 'blue' })
    blueSmoke = 500
    await eventually(() => Date.now() > Date.parse(switched.standby!.keepUntil) + 100, {
      message: "blue's standby to be over",
    })
    for (let sent = 0; sent < 20; sent++) expect((await fetch(`${proxy.url}/work`)).status).toBe(500)
    const refused = await eventually(
      async () =>
        (await audit()).find((event) => event.action === 'rollback' && event.code === 'BG_SMOKE_FAILED'),
      { timeout: 10_000, message: 'the automatic rollback refused by the smoke checks' },
    )
    expect(refused).toMatchObject({ actor: 'bluegreen', result: 'refused' })
    expect(refused.reason).toMatch(/^automatic rollback: green error ratio/)
    // Still on green: the guard keeps trying, but says so once.
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    expect(await stateOf()).toMatchObject({ active: 'green', generation: switched.generation })
    const refusals = (await audit()).filter((event) => event.action === 'rollback')
    expect(refusals).toHaveLength(1)
    // Blue mended: the next try rolls back.
    blueSmoke = 200
    const back = await eventually(
      async () => {
        const state = await stateOf()
        return state.active === 'blue' ? state : undefined
      },
      { timeout: 15_000, message: 'the rollback once blue passes its smoke checks' },
    )
    expect(back.generation).toBe(switched.generation + 1)
    expect((await audit())[0]).toMatchObject({ action: 'rollback', result: 'accepted', actor: 'bluegreen' })
  })
})
