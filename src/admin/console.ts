import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { gzipSync } from 'node:zlib'

// The operator console (GET /): one HTML page, a few JS modules and one stylesheet from src/console/, written by
// hand and served as they are (no build step, nothing from another origin). The modules and the stylesheet are
// served under names carrying a hash of their content, cached for a year; the page itself is never cached, so a
// new version is picked up at the next load. A module's imports of its siblings (`from './dom.js'`) are pointed at
// their hashed names before it is hashed itself, so a change to one module renames every module that imports it.

/** Where the files are, beside this module in src/ and in dist/ alike (scripts/build.js copies them). */
const FILES = new URL('../console/', import.meta.url)

/**
 * Nothing but this origin's own script and stylesheet; data: only for the favicon; no frames, no forms posting
 * anywhere, no <base>. connect-src 'self' keeps the page's fetches on the admin API.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ')

export interface Asset {
  type: string
  body: Buffer
  gzipped: Buffer
  cache: string
}

type Serve = (req: IncomingMessage, res: ServerResponse) => void

const JAVASCRIPT = 'text/javascript; charset=utf-8'

/** `import ... from './name.js'` at the start of a line: how the console's modules import each other. */
const SIBLING_IMPORT = /^(import\b[^'"]*?\bfrom\s*)'\.\/([a-z0-9-]+\.js)'/gm

/** The console's routes for the admin server: `/` and the hashed asset names, each a GET. */
export function consoleRoutes(): Record<string, { GET: Serve }> {
  const modules = linkModules(FILES, 'console.js')
  const script = modules.get('console.js')!
  const style = hashed('console.css', readFileSync(new URL('console.css', FILES)), 'text/css; charset=utf-8')
  // The modules the entry imports, preloaded with it rather than found one import at a time.
  const preloads = [...modules.values()]
    .filter((module) => module !== script)
    .map((module) => `<link rel="modulepreload" href="${module.path}">`)
    .join('\n')
  const html = readFileSync(new URL('index.html', FILES), 'utf8')
    .replace('"console.js"></script>', `"${script.path}"></script>${preloads ? `\n${preloads}` : ''}`)
    .replace('console.css', style.path)
  const page = asset(Buffer.from(html), 'text/html; charset=utf-8', 'no-cache')
  const routes: Record<string, { GET: Serve }> = {
    '/': { GET: (req, res) => send(req, res, page, true) },
    [style.path]: { GET: (req, res) => send(req, res, style.asset, false) },
  }
  for (const module of modules.values()) {
    routes[module.path] = { GET: (req, res) => send(req, res, module.asset, false) }
  }
  return routes
}

export interface LinkedModule {
  /** `/console/<name>.<hash>.js`, the hash over the linked text. */
  path: string
  asset: Asset
}

/**
 * The entry module in `dir` and every sibling it imports, by file name, each with its sibling imports pointed at
 * their hashed paths (depth first, so a module is hashed after what it imports). An import cycle is refused.
 */
export function linkModules(dir: URL, entry: string): Map<string, LinkedModule> {
  const modules = new Map<string, LinkedModule>()
  const link = (name: string, trail: string[]): LinkedModule => {
    const known = modules.get(name)
    if (known) return known
    if (trail.includes(name))
      throw new Error(`the console's modules import each other: ${[...trail, name].join(' -> ')}`)
    const source = readFileSync(new URL(name, dir), 'utf8')
    const linked = source.replace(
      SIBLING_IMPORT,
      (_whole, head: string, sibling: string) => `${head}'${link(sibling, [...trail, name]).path}'`,
    )
    const module = hashed(name, Buffer.from(linked), JAVASCRIPT)
    modules.set(name, module)
    return module
  }
  link(entry, [])
  return modules
}

function hashed(name: string, body: Buffer, type: string): { path: string; asset: Asset } {
  const hash = createHash('sha256').update(body).digest('hex').slice(0, 12)
  const dot = name.lastIndexOf('.')
  const path = `/console/${name.slice(0, dot)}.${hash}${name.slice(dot)}`
  return { path, asset: asset(body, type, 'public, max-age=31536000, immutable') }
}

function asset(body: Buffer, type: string, cache: string): Asset {
  return { type, body, gzipped: gzipSync(body, { level: 9 }), cache }
}

function send(req: IncomingMessage, res: ServerResponse, asset: Asset, isPage: boolean): void {
  const gzip = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))
  const body = gzip ? asset.gzipped : asset.body
  res.writeHead(200, {
    'content-type': asset.type,
    'content-length': body.length,
    'cache-control': asset.cache,
    vary: 'accept-encoding',
    'x-content-type-options': 'nosniff',
    ...(gzip ? { 'content-encoding': 'gzip' } : {}),
    ...(isPage
      ? {
          'content-security-policy': CONSOLE_CSP,
          'referrer-policy': 'no-referrer',
          'x-frame-options': 'DENY',
        }
      : {}),
  })
  res.end(body)
}
