import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { gzipSync } from 'node:zlib'

// The operator console (GET /): one HTML page, one JS module and one stylesheet from src/console/, written by hand
// and served as they are (no build step, nothing from another origin). The script and the stylesheet are served
// under names carrying a hash of their content, cached for a year; the page itself is never cached, so a new
// version is picked up at the next load.

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

interface Asset {
  type: string
  body: Buffer
  gzipped: Buffer
  cache: string
}

type Serve = (req: IncomingMessage, res: ServerResponse) => void

/** The console's routes for the admin server: `/` and the hashed asset names, each a GET. */
export function consoleRoutes(): Record<string, { GET: Serve }> {
  const script = hashed('console.js', 'text/javascript; charset=utf-8')
  const style = hashed('console.css', 'text/css; charset=utf-8')
  const html = readFileSync(new URL('index.html', FILES), 'utf8')
    .replace('console.js', script.path)
    .replace('console.css', style.path)
  const page = asset(Buffer.from(html), 'text/html; charset=utf-8', 'no-cache')
  return {
    '/': { GET: (req, res) => send(req, res, page, true) },
    [script.path]: { GET: (req, res) => send(req, res, script.asset, false) },
    [style.path]: { GET: (req, res) => send(req, res, style.asset, false) },
  }
}

function hashed(name: string, type: string): { path: string; asset: Asset } {
  const body = readFileSync(new URL(name, FILES))
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
