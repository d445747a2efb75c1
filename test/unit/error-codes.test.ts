import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { BlueGreenError, ConfigError, codeOf, ErrorCodes, unavailable } from '../../src/errors.ts'
import { REPO } from '../helpers/servers.ts'

async function sources(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true })
  return entries
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => join(entry.parentPath, entry.name))
}

/** README's "Error codes" table: each code and what its status column says. */
async function documentedStatuses(): Promise<Map<string, string>> {
  const readme = await readFile(join(REPO, 'README.md'), 'utf8')
  const section = readme.slice(
    readme.indexOf('## Error codes'),
    readme.indexOf('\n## ', readme.indexOf('## Error codes') + 1),
  )
  const rows = section.matchAll(/^\|\s*`(BG_[A-Z_]+)`\s*\|\s*([^|]*?)\s*\|/gm)
  return new Map([...rows].map((row) => [row[1]!, row[2]!]))
}

describe('error codes', () => {
  it('README lists exactly the codes src/errors.ts defines', async () => {
    const documented = [...(await documentedStatuses()).keys()]
    expect(documented.sort()).toEqual(Object.keys(ErrorCodes).sort())
  })

  it("README gives each code its status, or for a code met on the command line the CLI's exit code", async () => {
    const documented = Object.fromEntries(await documentedStatuses())
    const expected = Object.fromEntries(
      Object.entries(ErrorCodes).map(([code, entry]) => [
        code,
        'exit' in entry ? `exit ${entry.exit}` : String(entry.status),
      ]),
    )
    expect(documented).toEqual(expected)
  })

  it('every status is an HTTP error status', () => {
    for (const entry of Object.values(ErrorCodes)) {
      if ('status' in entry) expect(entry.status).toBeGreaterThanOrEqual(400)
      if ('status' in entry) expect(entry.status).toBeLessThan(600)
    }
  })

  it('an error takes its status from its code', () => {
    expect(new BlueGreenError('BG_TARGET_UNHEALTHY', 'no healthy upstream').status).toBe(412)
    expect(new BlueGreenError('BG_GENERATION_CONFLICT', 'stale').status).toBe(409)
    expect(unavailable('Redis is down').status).toBe(503)
    expect(new ConfigError([{ path: 'listen', message: 'bad' }]).status).toBe(400)
  })

  it('an error nothing expected is audited as BG_INTERNAL, not as an unavailable store', () => {
    expect(codeOf(new TypeError("Cannot read properties of undefined (reading 'weights')"))).toBe(
      'BG_INTERNAL',
    )
    expect(codeOf(unavailable('Redis is down'))).toBe('BG_STATE_UNAVAILABLE')
  })

  it('every code is raised somewhere in the code, so none is documented but dead', async () => {
    // errors.ts itself only defines them (endsWith would also leave out proxy/upstream-errors.ts, which raises some).
    const files = (await sources(join(REPO, 'src'))).filter((file) => file !== join(REPO, 'src/errors.ts'))
    const text = (await Promise.all(files.map((file) => readFile(file, 'utf8')))).join('\n')
    const unused = Object.keys(ErrorCodes).filter(
      (code) => code !== 'BG_CONFIG_INVALID' && !text.includes(`'${code}'`),
    )
    // BG_CONFIG_INVALID is raised by the ConfigError class in errors.ts itself.
    expect(unused).toEqual([])
  })
})
