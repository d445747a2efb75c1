import { type ChildProcess, execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnCollecting } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import { echoUpstream, REPO, type TestServer, tempDir, writeConfig } from '../helpers/servers.ts'

// The package as a user gets it: `npm pack` (which builds dist/ through `prepare`), then `npm install -g` of the
// tarball into a temporary prefix, from the warm npm cache. Under node_modules Node strips no types, so this is
// what proves the built JavaScript runs: the command, and the proxy itself.

const run = promisify(execFile)
const { version } = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { version: string }
/** npm's variables from an outer `npm test` left out, so the inner npm uses its own prefix and cache settings. */
const npmEnv = Object.fromEntries(
  Object.entries(process.env).filter(
    ([name]) => !/^npm_(?!config_cache$)|^npm_config_(local_)?prefix$/.test(name),
  ),
)
/** This Node first on PATH, for the installed command's `#!/usr/bin/env node`. */
const PATH = `${dirname(process.execPath)}:${process.env.PATH}`

interface PackedFile {
  path: string
}

describe('the npm package, packed and installed globally into a temporary prefix', () => {
  let tmp: { path: string; remove(): Promise<void> }
  let files: string[]
  let bluegreen: string
  const children = new Set<ChildProcess>()
  const servers: TestServer[] = []

  beforeAll(async () => {
    tmp = await tempDir('bluegreen-package-')
    const { stdout } = await run(
      'npm',
      ['pack', '--json', '--silent', '--pack-destination', tmp.path, '--loglevel=error'],
      { cwd: REPO, env: npmEnv, timeout: 60_000 },
    )
    const [packed] = JSON.parse(stdout) as { filename: string; files: PackedFile[] }[]
    files = packed!.files.map((file) => file.path)
    const prefix = join(tmp.path, 'prefix')
    await run(
      'npm',
      ['install', '--global', '--prefix', prefix, join(tmp.path, packed!.filename)].concat([
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        '--loglevel=error',
      ]),
      { cwd: tmp.path, env: npmEnv, timeout: 60_000 },
    )
    bluegreen = join(prefix, 'bin/bluegreen')
  }, 120_000)

  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL')
    await Promise.all(servers.map((server) => server.close()))
    await tmp?.remove()
  })

  /** The installed command, run as a shell would: its own file, through its #! line. */
  function bluegreenCommand(args: string[]) {
    return run(bluegreen, args, { env: { ...process.env, PATH }, cwd: tmp.path, timeout: 10_000 })
  }

  it('holds the built JavaScript with source maps, the command and the license; no TypeScript, no tests', () => {
    for (const path of [
      'package.json',
      'LICENSE',
      'README.md',
      'bin/bluegreen.js',
      'bin/node-check.js',
      'dist/cli.js',
      'dist/cli.js.map',
      'dist/app.js',
      'dist/build-info.json',
      'dist/console/index.html',
      'dist/console/console.js',
      'dist/console/console.css',
    ]) {
      expect(files, path).toContain(path)
    }
    expect(files.filter((path) => /\.ts$|^src\/|^test\/|^bench\/|^scripts\//.test(path))).toEqual([])
  })

  it('bluegreen --version and --help run from the installed package', async () => {
    const versionRun = await bluegreenCommand(['--version'])
    expect(versionRun.stdout).toMatch(
      new RegExp(
        `^bluegreen-proxy ${version.replaceAll('.', '\\.')} \\(Node\\.js ${process.version}(, commit [0-9a-f]+)?\\)\\n$`,
      ),
    )
    const help = await bluegreenCommand(['--help'])
    expect(help.stdout).toMatch(/^bluegreen: a blue-green traffic switch\n\nUsage:/)
    expect(help.stderr).toBe('')
  })

  it('bluegreen check validates a config from the installed package: exit 0 and a summary, or 2 and every problem', async () => {
    const good = await writeConfig(tmp.path, {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      pools: { blue: { upstreams: ['http://127.0.0.1:1'] }, green: { upstreams: [] } },
      state: { store: 'file', path: join(tmp.path, 'state.json') },
    })
    const checked = await bluegreenCommand(['check', '--config', good])
    expect(checked.stdout).toContain('http://127.0.0.1:1')
    expect(checked.stderr).toBe('')
    const bad = await writeConfig(tmp.path, { listen: 'nowhere', pools: { blue: {} } }, 'bad.json')
    const refused = await bluegreenCommand(['check', '--config', bad]).then(
      () => undefined,
      (error: { code: number; stderr: string }) => error,
    )
    expect(refused?.code).toBe(2)
    expect(refused?.stderr).toMatch(
      /^bluegreen: invalid configuration, \d+ problem\(s\) \(BG_CONFIG_INVALID\):\n/,
    )
  })

  it('a stack trace points into the TypeScript sources (the maps carry them)', async () => {
    const map = JSON.parse(
      await readFile(join(dirname(bluegreen), '../lib/node_modules/bluegreen-proxy/dist/cli.js.map'), 'utf8'),
    ) as { sources: string[]; sourcesContent?: string[] }
    expect(map.sources).toEqual(['../src/cli.ts'])
    expect(map.sourcesContent?.[0]).toContain('The only module that touches `process`')
  })

  it('bluegreen serve runs the proxy from the installed package, and GET /version says which build', async () => {
    const [blue, green] = await Promise.all([echoUpstream('blue'), echoUpstream('green')])
    servers.push(blue, green)
    const config = await writeConfig(tmp.path, {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
      state: { path: join(tmp.path, 'state.json') },
    })
    const { child, output, exited } = spawnCollecting(bluegreen, ['serve', '--config', config], {
      env: { ...process.env, PATH },
    })
    children.add(child)
    const started = await eventually(
      () => {
        if (child.exitCode !== null) throw new Error(`the proxy exited with ${child.exitCode}:\n${output()}`)
        const line = output()
          .split('\n')
          .find((entry) => entry.includes('bluegreen-proxy started'))
        return line ? (JSON.parse(line) as { proxy: { port: number }; admin: { port: number } }) : undefined
      },
      { timeout: 15_000, message: 'the installed proxy to start' },
    )
    const proxied = await fetch(`http://127.0.0.1:${started.proxy.port}/`)
    expect(proxied.headers.get('x-bluegreen-color')).toBe('blue')
    await proxied.text()
    const build = (await (await fetch(`http://127.0.0.1:${started.admin.port}/version`)).json()) as Record<
      string,
      string
    >
    expect(build.version).toBe(version)
    expect(build.node).toBe(process.version)
    // Packed from a git checkout, the build recorded its commit.
    expect(build.commit).toMatch(/^[0-9a-f]{7,40}$/)
    // The console's files came along: the page, and the script it names.
    const page = await (await fetch(`http://127.0.0.1:${started.admin.port}/`)).text()
    const script = /src="(\/console\/console\.[0-9a-f]+\.js)"/.exec(page)?.[1]
    expect(script).toBeDefined()
    expect((await fetch(`http://127.0.0.1:${started.admin.port}${script}`)).status).toBe(200)
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
  }, 30_000)
})
