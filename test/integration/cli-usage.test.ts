import type { IncomingMessage, ServerResponse } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type CliResult, killRunningClis, runCli } from '../helpers/cli.ts'
import { refusedUrl, startServer, type TestServer } from '../helpers/servers.ts'

// What the CLI says when the operator slips: a wrong --admin, a mistyped command or option, a bad argument. One
// clean line each, the right exit code, and never a stack trace.

/** One line on stderr, nothing on stdout, the exit code given, no stack. */
function expectOneLine(result: CliResult, exitCode: number): void {
  expect(result.code, result.stderr).toBe(exitCode)
  expect(result.stdout).toBe('')
  expect(result.stderr).toMatch(/^bluegreen: [^\n]+\n$/)
  expect(result.stderr).not.toMatch(/\n\s+at /)
}

afterAll(() => {
  killRunningClis()
})

describe('an --admin URL that is not a bluegreen admin API', () => {
  const received: string[] = []
  let application: TestServer
  let html: TestServer
  let notJson: TestServer

  beforeAll(async () => {
    // What sits on the proxy port: an application that answers 200 and JSON to anything, POSTs included.
    application = await startServer(async (req: IncomingMessage, res: ServerResponse) => {
      for await (const _ of req);
      received.push(`${req.method} ${req.url}`)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ ok: true, active: 'not a state' }))
    })
    html = await startServer((req, res) => {
      received.push(`${req.method} ${req.url}`)
      res.writeHead(404, { 'content-type': 'text/html' })
      res.end('<html><body>Not Found</body></html>')
    })
    // Marked, yet not JSON: a proxy in front of the admin API that rewrote the body, say.
    notJson = await startServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'x-bluegreen-admin': '1' })
      res.end('hello')
    })
  })
  afterAll(async () => {
    await application?.close()
    await html?.close()
    await notJson?.close()
  })

  it('every command says so in one line and exits 1; no change is sent to it', async () => {
    const commands = [
      ['status'],
      ['switch', 'green', '--token', 'some-token-0123456789'],
      ['weights', '90', '10'],
      ['rollback', '--force'],
      ['rollout', 'green'],
      ['rollout', 'abort'],
      ['events'],
      ['replicas'],
      ['replicas', 'forget', 'r1'],
    ]
    for (const server of [application, html]) {
      const results = await Promise.all(
        commands.map((command) => runCli([...command, '--admin', server.url])),
      )
      results.forEach((result, index) => {
        expectOneLine(result, 1)
        expect(result.stderr, commands[index]!.join(' ')).toContain(
          `${server.url}: this is not a bluegreen admin API`,
        )
        expect(result.stderr).toContain('(BG_NOT_ADMIN_API)')
      })
    }
    expect(received.length).toBeGreaterThan(0)
    expect(received.filter((line) => !line.startsWith('GET '))).toEqual([])
  })

  it('a marked answer that is not JSON: one line, exit 1', async () => {
    const result = await runCli(['status', '--admin', notJson.url])
    expectOneLine(result, 1)
    expect(result.stderr).toContain('answered GET /state with something other than a JSON object')
  })

  it('nothing listening: one line, exit 1', async () => {
    const result = await runCli(['switch', 'green', '--admin', await refusedUrl()])
    expectOneLine(result, 1)
    expect(result.stderr).toContain('ECONNREFUSED')
  })
})

describe('usage mistakes: exit 2 and one line, before anything is called', () => {
  // Nothing listens there: a command that called it would exit 1, not 2.
  let nowhere: string[]
  beforeAll(async () => {
    nowhere = ['--admin', await refusedUrl()]
  })

  it.each([
    [['weights', '80', '30'], /weights must add up to 100 \(80 \+ 30 = 110\)/],
    [['weights', '101', '0'], /weights/],
    [['events', '--limit', '0'], /--limit takes a whole number from 1 to 1000/],
    [['events', '--limit', '1001'], /--limit takes a whole number from 1 to 1000/],
    [['switch', 'purple'], /switch takes a color/],
    [['status', 'extra'], /unexpected argument "extra"/],
    [['swich', 'green'], /unknown command "swich"; did you mean "switch"\?/],
    [['staus'], /did you mean "status"\?/],
    [['frobnicate'], /unknown command "frobnicate"; see bluegreen --help/],
    [['switch', 'green', '--frce'], /^bluegreen: unknown option --frce; did you mean --force\?\n$/],
    [['status', '--jsn'], /unknown option --jsn; did you mean --json\?/],
    [
      ['status', '--nothing-like-it'],
      /^bluegreen: unknown option --nothing-like-it; see bluegreen status --help\n$/,
    ],
    [['status', '-x'], /^bluegreen: unknown option -x; see bluegreen status --help\n$/],
    [['switch', 'green', '--reason'], /^bluegreen: --reason needs a value\n$/],
    [['help', 'nosuch'], /unknown command "nosuch"/],
  ])('%j', async (args, message) => {
    const result = await runCli([...args, ...nowhere])
    expectOneLine(result, 2)
    expect(result.stderr).toMatch(message)
  })

  it('help CMD shows the same help as CMD --help', async () => {
    for (const command of ['switch', 'events', 'serve']) {
      const [viaHelp, viaFlag] = await Promise.all([
        runCli(['help', command]),
        runCli([command, '--help', ...nowhere]),
      ])
      expect(viaHelp.code, viaHelp.stderr).toBe(0)
      expect(viaHelp.stdout).toMatch(new RegExp(`^bluegreen ${command}\\b`))
      expect(viaHelp.stdout).toBe(viaFlag.stdout)
    }
  })
})
