// Logs for people and for machines: `log.format: pretty` gives readable lines, `json` (and `auto` when stdout is
// not a terminal, as here) one JSON object per line. A test cannot easily own a terminal, so `auto` on a TTY is
// the one case left to the pretty formatter's unit test and to a person trying it.

import type { ChildProcess } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnCollecting } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import { CLI, echoUpstream, type TestServer, tempDir, writeConfig } from '../helpers/servers.ts'

describe('log.format', () => {
  let blue: TestServer
  let dir: Awaited<ReturnType<typeof tempDir>>
  const children: ChildProcess[] = []

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    dir = await tempDir('bluegreen-log-format-')
  })
  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL')
    await blue?.close()
    await dir?.remove()
  })

  /** Starts `serve` with that log format and returns what it printed up to its start-up line, stopped. */
  async function startedWith(format: string | undefined): Promise<string> {
    const file = await writeConfig(
      dir.path,
      {
        listen: '127.0.0.1:0',
        admin: { listen: '127.0.0.1:0' },
        pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [] } },
        state: { path: `./state-${format}.json` },
        log: format === undefined ? {} : { format },
      },
      `config-${format}.json`,
    )
    const { child, output } = spawnCollecting(process.execPath, [CLI, 'serve', '--config', file])
    children.push(child)
    await eventually(() => output().includes('bluegreen-proxy started'), { message: 'the proxy to start' })
    child.kill('SIGTERM')
    await eventually(() => child.exitCode !== null, { message: 'the proxy to exit' })
    return output()
  }

  it('pretty: readable lines, no JSON, no color codes when the output is not a terminal', async () => {
    const output = await startedWith('pretty')
    const lines = output.trim().split('\n')
    expect(lines.some((line) => line.startsWith('{'))).toBe(false)
    expect(output).toMatch(
      /^\d\d:\d\d:\d\d\.\d{3} INFO {2}bluegreen-proxy started {2}.*proxy=\{"host":"127\.0\.0\.1"/m,
    )
    expect(output).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}shutdown complete$/m)
    expect(output).not.toContain('\x1b[')
  })

  it('json, and auto when stdout is not a terminal: one JSON object per line', async () => {
    for (const format of ['json', undefined]) {
      const output = await startedWith(format)
      const lines = output.trim().split('\n')
      for (const line of lines) expect(() => JSON.parse(line), line).not.toThrow()
      expect(lines.map((line) => (JSON.parse(line) as { msg: string }).msg)).toContain(
        'bluegreen-proxy started',
      )
    }
  })
})
