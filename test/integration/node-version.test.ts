import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { cp, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { REPO, tempDir } from '../helpers/servers.ts'

// On a Node.js too old to run the sources, every way in says so in one line and exits 2, before anything of the
// proxy loads: the command itself, `npm start`, `npm test`, and `npm ci` (engine-strict). Run with a real old
// Node, Debian's /usr/bin/node where it is one.

const OLD_NODE = '/usr/bin/node'
const oldVersion = existsSync(OLD_NODE)
  ? spawnSync(OLD_NODE, ['--version'], { encoding: 'utf8' }).stdout.trim()
  : ''
const [major = 0, minor = 0] = oldVersion.slice(1).split('.').map(Number)
const tooOld = major > 0 && (major < 22 || (major === 22 && minor < 19))
const skipped = tooOld ? '' : ` (skipped: ${OLD_NODE} is ${oldVersion || 'missing'}, not older than 22.19)`

const MESSAGE = `bluegreen-proxy needs Node.js >= 22.19; this is ${oldVersion}\n`
/** A PATH on which `node` is the old one, as on a machine that has only it. */
const OLD_PATH = `/usr/bin:${process.env.PATH}`

/** Runs a command with the old Node first on PATH; npm's variables from an outer `npm test` left out. */
function withOldNode(command: string, args: string[], cwd = REPO) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^npm_/.test(name)))
  return spawnSync(command, args, { cwd, env: { ...env, PATH: OLD_PATH }, encoding: 'utf8', timeout: 30_000 })
}

describe.skipIf(!tooOld)(`on Node.js ${oldVersion}${skipped}`, () => {
  it('bluegreen says what it needs and exits 2, whatever the command', () => {
    for (const args of [['--help'], ['serve', '--config', 'x.yaml'], ['--version']]) {
      const result = spawnSync(OLD_NODE, [join(REPO, 'bin/bluegreen.js'), ...args], { encoding: 'utf8' })
      expect(result.stderr).toBe(MESSAGE)
      expect(result.stdout).toBe('')
      expect(result.status).toBe(2)
    }
  })

  it('npm start and npm test say the same before running anything', () => {
    for (const script of ['start', 'test']) {
      const result = withOldNode('npm', ['run', '--silent', script])
      expect(result.stderr, script).toContain(MESSAGE)
      expect(result.stderr, script).not.toMatch(/Unknown file extension|vitest/i)
      expect(result.status, script).not.toBe(0)
    }
  })

  describe('npm ci (engine-strict in .npmrc)', () => {
    let project: { path: string; remove(): Promise<void> }

    beforeAll(async () => {
      project = await tempDir('bluegreen-engines-')
      for (const file of ['package.json', 'package-lock.json', '.npmrc']) {
        await cp(join(REPO, file), join(project.path, file))
      }
      await writeFile(join(project.path, 'README.md'), 'engine-strict check\n')
    })

    afterAll(async () => {
      await project?.remove()
    })

    it('refuses on the old Node, naming the requirement', () => {
      const result = withOldNode('npm', ['ci', '--dry-run', '--no-audit', '--no-fund'], project.path)
      expect(result.status).not.toBe(0)
      expect(result.stderr).toContain('Required: {"node":">=22.19"}')
    })

    it('installs on this one (no dependency is refused by engine-strict)', () => {
      const result = spawnSync(
        'npm',
        // --ignore-scripts: the copy has no sources for `prepare` to build; the engines check is what is tried here.
        [
          'ci',
          '--dry-run',
          '--ignore-scripts',
          '--no-audit',
          '--no-fund',
          '--prefer-offline',
          '--loglevel=error',
        ],
        { cwd: project.path, encoding: 'utf8', timeout: 60_000 },
      )
      expect(result.stderr).toBe('')
      expect(result.status).toBe(0)
    })
  })
})
