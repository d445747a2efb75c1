import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { cp, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { dirname, join, posix, relative } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import { LAST_STATE_FILE } from '../../src/config/schema.ts'
import { spawnCollecting } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import { echoUpstream, freePort, REPO, type TestServer, tempDir } from '../helpers/servers.ts'

// The image without a Docker engine (there is none on the machines this runs on). First what the Dockerfile says:
// its stages, the user, the health check, the exec form. Then the build replayed in a temporary folder, one root
// per stage: the context copied through .dockerignore, `npm ci` run as the image runs it, and the proxy started
// with the image's entrypoint, working directory and environment, its health read by the HEALTHCHECK's own command.

const run = promisify(execFile)

interface Instruction {
  keyword: string
  args: string
}

interface Stage {
  from: string
  name: string | undefined
  instructions: Instruction[]
}

/** Dockerfile instructions by stage: comments dropped, continuation lines joined. */
function parseDockerfile(text: string): Stage[] {
  const logical: string[] = []
  let pending = ''
  for (const line of text.split('\n')) {
    if (/^\s*#/.test(line)) continue
    const continued = /\\\s*$/.test(line)
    pending += continued ? line.replace(/\\\s*$/, ' ') : line
    if (continued) continue
    if (pending.trim() !== '') logical.push(pending.trim())
    pending = ''
  }
  const stages: Stage[] = []
  for (const line of logical) {
    const [, keyword = '', args = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? []
    const instruction = { keyword: keyword.toUpperCase(), args: args.trim() }
    if (instruction.keyword === 'FROM') {
      const [, from = '', name] = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instruction.args) ?? []
      stages.push({ from, name, instructions: [] })
    } else {
      const stage = stages.at(-1)
      if (!stage) throw new Error(`${instruction.keyword} before the first FROM`)
      stage.instructions.push(instruction)
    }
  }
  return stages
}

function argsOf(stage: Stage, keyword: string): string[] {
  return stage.instructions.filter((instruction) => instruction.keyword === keyword).map(({ args }) => args)
}

/** An exec-form argument list (a JSON array), or undefined for the shell form. */
function execForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined
  const parsed: unknown = JSON.parse(args)
  return Array.isArray(parsed) && parsed.every((item) => typeof item === 'string') ? parsed : undefined
}

function imageEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {}
  for (const args of argsOf(stage, 'ENV')) {
    for (const [, name = '', value = ''] of args.matchAll(
      /([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g,
    )) {
      env[name] = value.startsWith('"') ? (JSON.parse(value) as string) : value
    }
  }
  return env
}

function healthcheck(stage: Stage): { options: Record<string, string>; command: string[] } {
  const [args] = argsOf(stage, 'HEALTHCHECK')
  const [, flags = '', command = ''] = /^((?:--\S+\s+)*)CMD\s+(.*)$/.exec(args ?? '') ?? []
  const options = Object.fromEntries(
    [...flags.matchAll(/--([a-z-]+)=(\S+)/g)].map(([, key, value]) => [key, value]),
  )
  const exec = execForm(command)
  if (!exec) throw new Error(`HEALTHCHECK must be CMD in exec form, got ${JSON.stringify(args)}`)
  return { options: options as Record<string, string>, command: exec }
}

/** Seconds of a Dockerfile duration such as "3s", "500ms" or "1m30s". */
function seconds(duration: string): number {
  let total = 0
  for (const [, amount = '0', unit] of duration.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    total += Number(amount) * { ms: 0.001, s: 1, m: 60, h: 3600 }[unit as 'ms' | 's' | 'm' | 'h']
  }
  return total
}

/** .dockerignore as Docker applies it: the last matching pattern wins, and a pattern also covers what is under it. */
function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const negated = line.startsWith('!')
      const pattern = posix.normalize((negated ? line.slice(1) : line).trim()).replace(/^\/+|\/+$/g, '')
      const source = pattern
        .split(/(\*\*\/|\*\*|\*|\?)/)
        .map((part) => {
          if (part === '**/') return '(?:.*/)?'
          if (part === '**') return '.*'
          if (part === '*') return '[^/]*'
          if (part === '?') return '[^/]'
          return part.replace(/[.+^${}()|[\]\\]/g, '\\$&')
        })
        .join('')
      return { negated, regex: new RegExp(`^${source}$`) }
    })
  return (path) => {
    const parts = path.split('/')
    const prefixes = parts.map((_, index) => parts.slice(0, index + 1).join('/'))
    let ignored = false
    for (const rule of rules) {
      if (prefixes.some((prefix) => rule.regex.test(prefix))) ignored = !rule.negated
    }
    return ignored
  }
}

const dockerfileText = await readFile(join(REPO, 'Dockerfile'), 'utf8')
const stages = parseDockerfile(dockerfileText)
const final = stages.at(-1)!
const env = imageEnv(final)
const ignored = dockerignore(await readFile(join(REPO, '.dockerignore'), 'utf8'))
const dockerConfig = parseYaml(await readFile(join(REPO, 'deploy/docker/config.yaml'), 'utf8')) as {
  listen: string
  admin: { listen: string; token: string }
  state: { path: string }
}
const portOf = (address: string) => Number(address.slice(address.lastIndexOf(':') + 1))

describe('the Dockerfile', () => {
  it('builds in three stages on node:24-slim: the build, the production install, then the runtime', () => {
    expect(stages.map((stage) => stage.from)).toEqual(['node:24-slim', 'node:24-slim', 'node:24-slim'])
    const [build, deps] = [stages[0]!, stages[1]!]
    // The build installs everything (TypeScript is a development dependency) and compiles as `npm run build` does.
    expect(build.name).toBeTruthy()
    expect(argsOf(build, 'RUN')).toEqual([expect.stringMatching(/^npm ci\b(?!.*--omit)/), 'npm run build'])
    expect(argsOf(final, 'COPY')).toContain(`--from=${build.name} /app/dist ./dist`)
    expect(deps.name).toBeTruthy()
    expect(argsOf(deps, 'RUN').some((args) => /^npm ci\b.*--omit=dev\b/.test(args))).toBe(true)
    expect(argsOf(final, 'COPY')).toContain(`--from=${deps.name} /app/node_modules ./node_modules`)
    // Nothing installs in the runtime stage: no npm, no cache, no dev dependency there; and no TypeScript sources.
    expect(argsOf(final, 'RUN').some((args) => /\bnpm\b/.test(args))).toBe(false)
    expect(argsOf(final, 'COPY').some((args) => /^src\b/.test(args))).toBe(false)
  })

  it('runs as a numeric non-root user that owns the state directory', () => {
    const [user] = argsOf(final, 'USER')
    expect(user).toMatch(/^\d+(:\d+)?$/) // numeric, so Kubernetes' runAsNonRoot can verify it
    const [uid] = user!.split(':')
    expect(uid).not.toBe('0')
    const stateDir = dirname(dockerConfig.state.path)
    expect(argsOf(final, 'RUN').join(' ')).toContain(`chown ${user} ${stateDir}`)
    // With Redis, each replica's local copy of the state goes to the same directory by default.
    expect(dirname(LAST_STATE_FILE)).toBe(stateDir)
  })

  it('checks /healthz on the admin listener of the config made for the image, with a timeout', () => {
    const { options, command } = healthcheck(final)
    expect(command[0]).toBe('node')
    expect(command.join(' ')).toContain('/healthz')
    expect(seconds(options.timeout ?? '30s')).toBeLessThanOrEqual(5)
    // The command reads BLUEGREEN_ADMIN, which the image points at the admin port of deploy/docker/config.yaml.
    expect(command.join(' ')).toContain('process.env.BLUEGREEN_ADMIN')
    const admin = new URL(env.BLUEGREEN_ADMIN ?? '')
    expect(admin.hostname).toBe('127.0.0.1')
    expect(Number(admin.port)).toBe(portOf(dockerConfig.admin.listen))
    expect(command.join(' ')).toContain(`'${env.BLUEGREEN_ADMIN}'`) // the fallback agrees
    // Reachable from outside the container means a wildcard address, which needs a token.
    expect(dockerConfig.admin.listen).toMatch(/^0\.0\.0\.0:/)
    expect(dockerConfig.admin.token).toMatch(/^\$\{BLUEGREEN_ADMIN_TOKEN\}$/)
    const exposed = argsOf(final, 'EXPOSE').flatMap((args) => args.split(/\s+/).map(Number))
    expect(exposed).toEqual(
      expect.arrayContaining([portOf(dockerConfig.listen), portOf(dockerConfig.admin.listen)]),
    )
  })

  it('starts node itself (exec form, so SIGTERM reaches it) on the mounted config', () => {
    const [entrypoint] = argsOf(final, 'ENTRYPOINT')
    const [command] = argsOf(final, 'CMD')
    expect(execForm(entrypoint ?? '')).toEqual(['node', 'bin/bluegreen.js'])
    expect(execForm(command ?? '')).toEqual(['serve'])
    expect(argsOf(final, 'STOPSIGNAL').every((signal) => signal === 'SIGTERM')).toBe(true)
    expect(env.BLUEGREEN_CONFIG).toBe('/etc/bluegreen/config.yaml')
    expect(env.NODE_ENV).toBe('production')
  })

  it('.dockerignore keeps out the repository, local installs and secrets, and keeps in what the image copies', () => {
    for (const path of [
      '.git/HEAD',
      'node_modules/undici/package.json',
      'test/x.ts',
      '.env',
      'src/.env',
      'a.pem',
      'dist/cli.js',
    ]) {
      expect(ignored(path), path).toBe(true)
    }
    for (const path of [
      'package.json',
      'package-lock.json',
      'bin/bluegreen.js',
      'src/cli.ts',
      'src/config/schema.ts',
      'tsconfig.json',
      'tsconfig.build.json',
      'scripts/build.js',
    ]) {
      expect(ignored(path), path).toBe(false)
    }
  })
})

const npmVersion = spawnSync('npm', ['--version'], { encoding: 'utf8' })
const npmMissing = npmVersion.error || npmVersion.status !== 0 ? 'npm is not on PATH' : undefined

/** Instructions that only describe the image (read from the Dockerfile where the test needs them). */
const IMAGE_METADATA = new Set([
  'LABEL',
  'ENV',
  'USER',
  'EXPOSE',
  'HEALTHCHECK',
  'ENTRYPOINT',
  'CMD',
  'STOPSIGNAL',
])

/** A stage's filesystem while replaying: its own root folder and the working directory inside it. */
interface ReplayedStage {
  root: string
  workdir: string
}

describe.skipIf(npmMissing !== undefined)(
  `the image, replayed in a temporary folder${npmMissing ? ` (skipped: ${npmMissing})` : ''}`,
  () => {
    let tmp: { path: string; remove(): Promise<void> }
    let image: ReplayedStage
    const children = new Set<ChildProcess>()
    const servers: TestServer[] = []

    /** `npm ci` or `npm run` as the Dockerfile writes it, from the warm cache; npm variables of an outer `npm test` left out. */
    async function npm(args: string, cwd: string): Promise<void> {
      const [npm, ...rest] = args.split(/\s+/)
      expect(npm).toBe('npm')
      const outer = Object.entries(process.env).filter(
        ([name]) => !/^npm_(?!config_)|^npm_config_(local_)?prefix$/.test(name),
      )
      await run('npm', [...rest, '--prefer-offline', '--loglevel=error'], {
        cwd,
        env: Object.fromEntries(outer),
        timeout: 120_000,
      })
    }

    /** COPY from the build context (through .dockerignore) or from an earlier stage. */
    async function copy(args: string, into: ReplayedStage, built: Map<string, ReplayedStage>): Promise<void> {
      const words = args.split(/\s+/)
      const flags = words.filter((word) => word.startsWith('--'))
      const paths = words.filter((word) => !word.startsWith('--'))
      const destination = paths.pop()!
      const target = destination.startsWith('/')
        ? join(into.root, destination)
        : join(into.workdir, destination)
      const from = flags.find((flag) => flag.startsWith('--from='))?.slice('--from='.length)
      for (const source of paths) {
        expect(source, 'wildcards in COPY are not replayed').not.toMatch(/[*?[]/)
        if (from !== undefined) {
          const stage = built.get(from)
          if (!stage) throw new Error(`COPY --from=${from}: no such stage`)
          await cp(join(stage.root, source), target, { recursive: true, verbatimSymlinks: true })
          continue
        }
        const origin = join(REPO, source)
        const isDirectory = (await stat(origin)).isDirectory()
        const files = isDirectory
          ? (await readdir(origin, { recursive: true, withFileTypes: true }))
              .filter((entry) => entry.isFile())
              .map((entry) => relative(REPO, join(entry.parentPath, entry.name)))
          : [source]
        for (const file of files) {
          if (ignored(file.split('\\').join('/'))) continue
          const inside = isDirectory
            ? relative(source, file)
            : destination.endsWith('/')
              ? source.split('/').at(-1)!
              : ''
          const to = join(target, inside)
          await mkdir(dirname(to), { recursive: true })
          await cp(join(REPO, file), to)
        }
      }
    }

    /** RUN: npm ci and npm run build for real; the file-system set-up (mkdir, chown) inside the stage's root. Anything else fails. */
    async function runCommand(args: string, stage: ReplayedStage): Promise<void> {
      if (args.startsWith('npm ')) return npm(args, stage.workdir)
      for (const part of args.split('&&').map((command) => command.trim())) {
        const [command, ...rest] = part.split(/\s+/)
        if (command === 'mkdir') {
          for (const path of rest.filter((word) => !word.startsWith('-'))) {
            await mkdir(join(stage.root, path), { recursive: true })
          }
        } else if (command === 'chown') {
          // Only root may chown; check what it would do instead: a non-root owner, on folders that exist.
          const [owner = '', ...paths] = rest
          expect(owner.split(':')[0]).not.toMatch(/^(0|root)$/)
          for (const path of paths) expect(existsSync(join(stage.root, path)), path).toBe(true)
        } else {
          throw new Error(
            `this test does not know how to replay "RUN ${args}": teach it (test/integration/dockerfile.test.ts)`,
          )
        }
      }
    }

    beforeAll(async () => {
      tmp = await tempDir('bluegreen-image-')
      const built = new Map<string, ReplayedStage>()
      for (const [index, stage] of stages.entries()) {
        const root = join(tmp.path, `stage-${index}`)
        const replayed: ReplayedStage = { root, workdir: root }
        for (const { keyword, args } of stage.instructions) {
          if (keyword === 'WORKDIR') {
            replayed.workdir = join(root, args)
            await mkdir(replayed.workdir, { recursive: true })
          } else if (keyword === 'COPY') await copy(args, replayed, built)
          else if (keyword === 'RUN') await runCommand(args, replayed)
          else if (!IMAGE_METADATA.has(keyword)) {
            throw new Error(
              `this test does not replay ${keyword}: teach it (test/integration/dockerfile.test.ts)`,
            )
          }
        }
        built.set(stage.name ?? String(index), replayed)
        image = replayed
      }
    }, 180_000)

    afterAll(async () => {
      for (const child of children) child.kill('SIGKILL')
      await Promise.all(servers.map((server) => server.close()))
      await tmp?.remove()
    })

    /** The image's entrypoint and command, in its working directory, with its environment plus `docker run -e`s. */
    function startContainer(extraEnv: Record<string, string | undefined>) {
      const [entrypoint, command] = [argsOf(final, 'ENTRYPOINT')[0]!, argsOf(final, 'CMD')[0]!]
      const [program, ...args] = [...execForm(entrypoint)!, ...execForm(command)!]
      const started = spawnCollecting(program === 'node' ? process.execPath : program!, args, {
        cwd: image.workdir,
        env: { PATH: process.env.PATH, HOME: tmp.path, ...env, ...containerPaths(), ...extraEnv },
      })
      children.add(started.child)
      void started.exited.then(() => children.delete(started.child))
      return started
    }

    /** The image's absolute paths (its config) seen from the host: inside the replayed root. */
    function containerPaths(): Record<string, string> {
      return { BLUEGREEN_CONFIG: join(image.root, env.BLUEGREEN_CONFIG!) }
    }

    /** The HEALTHCHECK's command, as the engine runs it in the container; killed at the check's --timeout. */
    async function runHealthcheck(extraEnv: Record<string, string>): Promise<number | null> {
      const { options, command } = healthcheck(final)
      const [program, ...args] = command
      const child = spawn(program === 'node' ? process.execPath : program!, args, {
        cwd: image.workdir,
        env: { PATH: process.env.PATH, HOME: tmp.path, ...env, ...extraEnv },
        stdio: 'ignore',
      })
      const timer = setTimeout(() => child.kill('SIGKILL'), seconds(options.timeout ?? '30s') * 1000)
      const code = await new Promise<number | null>((resolve) =>
        child.once('exit', (exitCode) => resolve(exitCode)),
      )
      clearTimeout(timer)
      return code
    }

    /** deploy/docker/config.yaml, the config documented for the image, on free ports, written where it is mounted. */
    async function mountConfig(adminPort: number): Promise<void> {
      const config = structuredClone(dockerConfig) as Record<string, unknown> & typeof dockerConfig
      config.listen = '127.0.0.1:0'
      config.admin.listen = `0.0.0.0:${adminPort}` // a wildcard, as in a container: the token is required
      config.state.path = join(image.root, dockerConfig.state.path)
      const file = join(image.root, env.BLUEGREEN_CONFIG!)
      await mkdir(dirname(file), { recursive: true })
      await writeFile(file, stringifyYaml(config))
    }

    it('holds the built JavaScript and the production dependencies, and nothing ignored or for development', () => {
      for (const path of [
        'package.json',
        'bin/bluegreen.js',
        'dist/cli.js',
        'dist/cli.js.map',
        'node_modules/undici/package.json',
      ]) {
        expect(existsSync(join(image.workdir, path)), path).toBe(true)
      }
      for (const path of [
        'node_modules/vitest',
        'node_modules/typescript',
        'src',
        'tsconfig.json',
        'test',
        'package-lock.json',
        'Dockerfile',
      ]) {
        expect(existsSync(join(image.workdir, path)), path).toBe(false)
      }
      expect(existsSync(join(image.root, dirname(dockerConfig.state.path)))).toBe(true)
    })

    it('starts as the image does: healthy by the HEALTHCHECK command, ready, forwarding, and drains on SIGTERM', async () => {
      const [blue, green] = await Promise.all([echoUpstream('blue'), echoUpstream('green')])
      servers.push(blue, green)
      const adminPort = await freePort()
      await mountConfig(adminPort)
      const token = 'a-token-from-the-environment'
      const admin = `http://127.0.0.1:${adminPort}`
      const container = startContainer({
        BLUEGREEN_ADMIN: admin, // the image's value names port 9090; the test's admin port is a free one
        BLUEGREEN_ADMIN_TOKEN: token,
        BLUE_UPSTREAM: blue.url,
        GREEN_UPSTREAM: green.url,
      })
      const started = await eventually(
        () => {
          const line = container
            .output()
            .split('\n')
            .find((entry) => entry.includes('bluegreen-proxy started'))
          if (line) return JSON.parse(line) as { proxy: { port: number } }
          // A process that died will not start: say why at once instead of waiting out the timeout.
          if (container.child.exitCode !== null || container.child.signalCode !== null) return { died: true }
          return undefined
        },
        { timeout: 15_000, message: 'the proxy to start' },
      )
      if (!('proxy' in started)) throw new Error(`the proxy exited:\n${container.output()}`)
      expect(await runHealthcheck({ BLUEGREEN_ADMIN: admin })).toBe(0)
      await eventually(async () => (await fetch(`${admin}/readyz`)).status === 200, {
        message: '/readyz to answer 200',
      })
      const proxied = await fetch(`http://127.0.0.1:${started.proxy.port}/`)
      expect(proxied.headers.get('x-bluegreen-color')).toBe('blue')
      await proxied.text()

      // The token came from the environment: a change needs it, and the state lands in the image's state folder.
      const switchTo = (authorization?: string) =>
        fetch(`${admin}/switch`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
          body: JSON.stringify({ to: 'green' }),
        })
      expect((await switchTo()).status).toBe(401)
      expect((await switchTo(`Bearer ${token}`)).status).toBe(200)
      expect(existsSync(join(image.root, dockerConfig.state.path))).toBe(true)

      container.child.kill('SIGTERM')
      expect(await container.exited).toBe(0)
      expect(container.output()).toContain('shutdown complete')
      expect(await runHealthcheck({ BLUEGREEN_ADMIN: admin })).toBe(1)
    }, 60_000)

    it('refuses to start without a token, since the admin API listens on a wildcard address', async () => {
      const adminPort = await freePort()
      await mountConfig(adminPort)
      const upstreams = { BLUE_UPSTREAM: 'http://127.0.0.1:1', GREEN_UPSTREAM: 'http://127.0.0.1:2' }
      const unset = startContainer({ ...upstreams, BLUEGREEN_ADMIN_TOKEN: undefined })
      expect(await unset.exited).toBe(2)
      expect(unset.output()).toMatch(/environment variable BLUEGREEN_ADMIN_TOKEN is not set/)
      const empty = startContainer({ ...upstreams, BLUEGREEN_ADMIN_TOKEN: '' })
      expect(await empty.exited).toBe(2)
      expect(empty.output()).toMatch(/admin\.token: required when admin\.listen is not a loopback address/)
    }, 30_000)
  },
)
