// `npm run build` (and `prepare`, so a pack or a git install builds too): src/*.ts to dist/*.js with source maps,
// for where Node will not strip types (under node_modules). dist/ is emptied first, so a deleted source leaves
// nothing behind in the package.
import { spawnSync } from 'node:child_process'
import { cpSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'

const dist = new URL('../dist/', import.meta.url)
rmSync(dist, { recursive: true, force: true })
// TypeScript's own tsc script, run by this Node: no shell, no PATH lookup.
const tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin/tsc')
const compiled = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { stdio: 'inherit' })
if (compiled.status !== 0) process.exit(compiled.status ?? 1)

// The console's page, script and stylesheet (src/console/), served by src/admin/console.ts from beside it: as they are.
cpSync(new URL('../src/console/', import.meta.url), new URL('console/', dist), { recursive: true })

// The commit, for GET /version and `bluegreen version`, when this is a git checkout (not in a Docker build).
const git = spawnSync('git', ['rev-parse', '--short=12', 'HEAD'], { encoding: 'utf8' })
const commit = git.status === 0 ? git.stdout.trim() : undefined
writeFileSync(new URL('build-info.json', dist), `${JSON.stringify({ commit })}\n`)
