import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { describe, expect, it } from 'vitest'

// The layers of src/, bottom first (README "Architecture"). A file may import its own layer and the ones below,
// never one above: the vocabulary does not know the state, the request path does not know the admin API, and only
// the CLI knows the app. A new file or folder must be given a layer here.
const LAYERS: readonly (readonly string[])[] = [
  ['errors.ts', 'log.ts', 'log-pretty.ts', 'colors.ts', 'version.ts'],
  ['config/'],
  ['state/', 'audit/'],
  ['routing/', 'metrics/', 'mirror/'],
  ['proxy/', 'rollout/', 'health/'],
  ['admin/', 'notify/'],
  ['app.ts', 'app/', 'cluster.ts', 'cluster-worker.ts', 'demo.ts'],
  ['cli.ts', 'cli/'],
]

const SRC = new URL('../../src/', import.meta.url).pathname

/** The layer of a path relative to src/ ("state/state.ts"), or undefined when none names it. */
function layerOf(path: string): number | undefined {
  const index = LAYERS.findIndex((layer) =>
    layer.some((entry) => (entry.endsWith('/') ? path.startsWith(entry) : path === entry)),
  )
  return index === -1 ? undefined : index
}

/** Every module a source file imports, type-only and dynamic imports and re-exports included. */
function importsOf(source: string): string[] {
  const patterns = [
    /^\s*(?:import|export)\s[^'"]*?\bfrom\s+['"]([^'"]+)['"]/gm,
    /^\s*import\s+['"]([^'"]+)['"]/gm,
    /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g,
  ]
  return patterns.flatMap((pattern) => [...source.matchAll(pattern)].map((match) => match[1]!))
}

/** What is wrong with one file's imports: each import of a higher layer, named. */
function layerProblems(file: string, source: string): string[] {
  const layer = layerOf(file)
  if (layer === undefined) return [`${file}: in no layer (add it to LAYERS in test/unit/layers.test.ts)`]
  const problems: string[] = []
  for (const specifier of importsOf(source)) {
    if (!specifier.startsWith('.')) continue
    const target = relative(SRC, join(SRC, dirname(file), specifier))
    const targetLayer = layerOf(target)
    if (targetLayer === undefined) problems.push(`${file} imports ${specifier}: ${target} is in no layer`)
    else if (targetLayer > layer) {
      problems.push(`${file} (layer ${layer}) imports ${specifier} (layer ${targetLayer}: ${target})`)
    }
  }
  return problems
}

function sourceFiles(): string[] {
  return readdirSync(SRC, { recursive: true, encoding: 'utf8' })
    .filter((path) => path.endsWith('.ts'))
    .sort()
}

describe('layers', () => {
  it('no file in src/ imports a layer above its own', () => {
    const problems = sourceFiles().flatMap((file) =>
      layerProblems(file, readFileSync(join(SRC, file), 'utf8')),
    )
    expect(problems).toEqual([])
  })

  it('reads every kind of import, so a check that finds nothing cannot pass by accident', () => {
    const source = [
      "import { a } from './a.ts'",
      "import type { B } from '../b.ts'",
      'import {',
      '  type C,',
      '  d,',
      "} from './c.ts'",
      "export { e } from './e.ts'",
      "export type { F } from './f.ts'",
      "import './side-effect.ts'",
      "const g = await import('./g.ts')",
      "import { readFile } from 'node:fs/promises'",
    ].join('\n')
    expect(importsOf(source)).toEqual([
      './a.ts',
      '../b.ts',
      './c.ts',
      './e.ts',
      './f.ts',
      'node:fs/promises',
      './side-effect.ts',
      './g.ts',
    ])
    const app = importsOf(readFileSync(join(SRC, 'app.ts'), 'utf8'))
    expect(app).toContain('./admin/server.ts')
  })

  it('names the file and the import that runs back up, type-only ones too', () => {
    expect(layerProblems('config/types.ts', "import type { State } from '../state/state.ts'")).toEqual([
      'config/types.ts (layer 1) imports ../state/state.ts (layer 2: state/state.ts)',
    ])
    expect(layerProblems('state/store.ts', "const { x } = await import('../admin/server.ts')")).toEqual([
      'state/store.ts (layer 2) imports ../admin/server.ts (layer 5: admin/server.ts)',
    ])
    expect(layerProblems('proxy/server.ts', "import { pick } from '../routing/pick.ts'")).toEqual([])
    expect(layerProblems('health/health.ts', "import type { X } from '../proxy/drain.ts'")).toEqual([])
    expect(layerProblems('newthing/file.ts', '')).toEqual([
      'newthing/file.ts: in no layer (add it to LAYERS in test/unit/layers.test.ts)',
    ])
  })
})
