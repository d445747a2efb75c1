import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { killRunningClis, runCli } from '../helpers/cli.ts'
import { parseMetrics } from '../helpers/metrics.ts'
import { REPO, useColorRig } from '../helpers/servers.ts'

// What is running: the CLI's --version and `version`, the admin API's GET /version and the build_info metric all
// say the package's version and the Node.js that runs it, read from package.json, not written down twice.

const { version } = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { version: string }

afterAll(killRunningClis)

describe('bluegreen --version', () => {
  it('prints the version and the Node.js, on one line, and exits 0; `version` is the same', async () => {
    const flag = await runCli(['--version'])
    expect(flag.code, flag.stderr).toBe(0)
    expect(flag.stdout).toBe(`bluegreen-proxy ${version} (Node.js ${process.version})\n`)
    expect(flag.stderr).toBe('')
    const command = await runCli(['version'])
    expect(command.code).toBe(0)
    expect(command.stdout).toBe(flag.stdout)
  })

  it('--json gives the same as GET /version', async () => {
    const result = await runCli(['version', '--json'])
    expect(result.code, result.stderr).toBe(0)
    expect(JSON.parse(result.stdout)).toEqual({ version, node: process.version })
  })
})

describe('GET /version and bluegreen_build_info', () => {
  const rig = useColorRig()

  it('GET /version answers the version and the Node.js', async () => {
    const response = await fetch(`${rig.proxy.admin}/version`)
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ version, node: process.version })
  })

  it('/metrics has bluegreen_build_info{version,node} 1', async () => {
    const metrics = parseMetrics(await (await fetch(`${rig.proxy.admin}/metrics`)).text())
    expect(metrics.get(`bluegreen_build_info{version="${version}",node="${process.version}"}`)).toBe(1)
  })
})
