import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ErrorCodes } from '../../src/errors.ts'
import { REPO } from '../helpers/servers.ts'

async function sources(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true })
  return entries
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => join(entry.parentPath, entry.name))
}

describe('error codes', () => {
  it('README lists exactly the codes src/errors.ts defines', async () => {
    const readme = await readFile(join(REPO, 'README.md'), 'utf8')
    const section = readme.slice(
      readme.indexOf('## Error codes'),
      readme.indexOf('\n## ', readme.indexOf('## Error codes') + 1),
    )
    const documented = [...section.matchAll(/^\|\s*`(BG_[A-Z_]+)`\s*\|/gm)].map((match) => match[1])
    expect(documented.sort()).toEqual(Object.keys(ErrorCodes).sort())
  })

  it('every code is raised somewhere in the code, so none is documented but dead', async () => {
    const files = (await sources(join(REPO, 'src'))).filter((file) => !file.endsWith('errors.ts'))
    const text = (await Promise.all(files.map((file) => readFile(file, 'utf8')))).join('\n')
    const unused = Object.keys(ErrorCodes).filter(
      (code) => code !== 'BG_CONFIG_INVALID' && !text.includes(`'${code}'`),
    )
    // BG_CONFIG_INVALID is raised by the ConfigError class in errors.ts itself.
    expect(unused).toEqual([])
  })
})
