import { readFile } from 'node:fs/promises'
import { dirname, extname, resolve } from 'node:path'
import { parseDocument } from 'yaml'
import { BlueGreenError } from '../errors.ts'
import { buildConfig } from './schema.ts'
import type { Config } from './types.ts'

export { parseDuration, parseListen } from './validate.ts'

/**
 * Reads, parses and validates a config file: JSON when it ends in .json, YAML otherwise (YAML is a superset).
 * Throws BG_CONFIG_UNREADABLE when the file cannot be read or parsed, a ConfigError (BG_CONFIG_INVALID) when it
 * parses but has problems, ${VAR} references to unset variables among them. Relative file paths in it are
 * relative to the file's own directory.
 */
export async function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  return buildConfig(await readConfigFile(file), env, { baseDir: dirname(resolve(file)) })
}

/** The file's parsed content, before substitution and validation. */
export async function readConfigFile(file: string): Promise<unknown> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    throw unreadable(`cannot read config file ${file}: ${(error as Error).message}`)
  }
  text = text.replace(/^\uFEFF/, '')
  return extname(file).toLowerCase() === '.json' ? parseJson(file, text) : parseYaml(file, text)
}

function parseYaml(file: string, text: string): unknown {
  const document = parseDocument(text, { prettyErrors: true })
  const [error] = document.errors
  if (error) {
    const line = error.linePos?.[0]
    const where = line ? `${file}:${line.line}:${line.col}` : file
    // The library's message ends with its own "at line L, column C:" and a source excerpt; keep the excerpt.
    throw unreadable(`cannot parse config file ${where}: ${error.message.trimEnd()}`)
  }
  try {
    return document.toJS()
  } catch (error) {
    throw unreadable(`cannot parse config file ${file}: ${(error as Error).message}`)
  }
}

function parseJson(file: string, text: string): unknown {
  try {
    return JSON.parse(text)
  } catch (error) {
    const message = (error as Error).message
    const offset = jsonErrorOffset(message, text)
    const where = offset === undefined ? file : `${file}:${lineAndColumn(text, offset)}`
    throw unreadable(`cannot parse config file ${where}: ${message}`)
  }
}

/** V8 reports most JSON errors at a position; "Unexpected token" only quotes the text around it. */
function jsonErrorOffset(message: string, text: string): number | undefined {
  const position = /at position (\d+)/.exec(message)
  if (position) return Number(position[1])
  if (message.includes('Unexpected end of JSON input')) return text.length
  const quoted = /^Unexpected token '(.+?)', "(?:\.\.\.)?([\s\S]*?)(?:\.\.\.)?" is not valid JSON/.exec(
    message,
  )
  if (!quoted) return undefined
  const [, token = '', excerpt = ''] = quoted
  const start = text.indexOf(excerpt)
  return start === -1 ? undefined : start + Math.max(0, excerpt.indexOf(token))
}

function lineAndColumn(text: string, offset: number): string {
  const before = text.slice(0, offset).split('\n')
  return `${before.length}:${(before.at(-1)?.length ?? 0) + 1}`
}

function unreadable(message: string): BlueGreenError {
  return new BlueGreenError('BG_CONFIG_UNREADABLE', message)
}
