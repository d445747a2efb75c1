import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { linkModules } from '../../src/admin/console.ts'

// The console's modules are served under hashed names, each one's imports of its siblings pointed at theirs: a
// change to a module must rename every module that imports it, or a browser would keep a cached importer that
// still loads the old one.

let dir: string | undefined

afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
  dir = undefined
})

async function modules(files: Record<string, string>): Promise<URL> {
  dir = await mkdtemp(join(tmpdir(), 'bluegreen-console-'))
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text)
  return pathToFileURL(`${dir}/`)
}

const text = (module: { asset: { body: Buffer } } | undefined) => module?.asset.body.toString('utf8') ?? ''

describe('the console modules, linked', () => {
  it('points sibling imports (on one line or several) at hashed names, and leaves other text alone', async () => {
    const linked = linkModules(
      await modules({
        'main.js':
          "import { a } from './a.js'\nimport {\n  b,\n  c,\n} from './b.js'\nconst s = \"from './a.js'\"\n",
        'a.js': "import { c } from './b.js'\nexport const a = c\n",
        'b.js': 'export const b = 1\nexport const c = 2\n',
      }),
      'main.js',
    )
    expect([...linked.keys()].sort()).toEqual(['a.js', 'b.js', 'main.js'])
    const b = linked.get('b.js')!.path
    const a = linked.get('a.js')!.path
    expect(a).toMatch(/^\/console\/a\.[0-9a-f]{12}\.js$/)
    expect(text(linked.get('main.js'))).toBe(
      `import { a } from '${a}'\nimport {\n  b,\n  c,\n} from '${b}'\nconst s = "from './a.js'"\n`,
    )
    expect(text(linked.get('a.js'))).toBe(`import { c } from '${b}'\nexport const a = c\n`)
  })

  it('renames every importer when an imported module changes', async () => {
    const files = { 'main.js': "import { a } from './a.js'\n", 'a.js': 'export const a = 1\n' }
    const before = linkModules(await modules(files), 'main.js')
    await rm(dir!, { recursive: true, force: true })
    const after = linkModules(await modules({ ...files, 'a.js': 'export const a = 2\n' }), 'main.js')
    expect(after.get('a.js')!.path).not.toBe(before.get('a.js')!.path)
    expect(after.get('main.js')!.path).not.toBe(before.get('main.js')!.path)
  })

  it('refuses an import cycle, naming it', async () => {
    const dir = await modules({
      'main.js': "import { a } from './a.js'\n",
      'a.js': "import { b } from './b.js'\nexport const a = 1\n",
      'b.js': "import { a } from './a.js'\nexport const b = 1\n",
    })
    expect(() => linkModules(dir, 'main.js')).toThrow(
      "the console's modules import each other: main.js -> a.js -> b.js -> a.js",
    )
  })
})
