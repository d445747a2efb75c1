#!/usr/bin/env node
// Plain JavaScript, so that it runs on any Node.js: the version check comes first, before anything else loads.
import './node-check.js'
import { existsSync } from 'node:fs'

// In a clone the TypeScript sources run directly (Node strips their types), so they are never stale. An installed
// package has no src/, only dist/ (`npm run build`): Node does not strip types under node_modules.
const sources = new URL('../src/cli.ts', import.meta.url)
const built = new URL('../dist/cli.js', import.meta.url)
if (existsSync(sources)) await import(sources.href)
else if (existsSync(built)) await import(built.href)
else {
  process.stderr.write('bluegreen: neither src/ nor dist/ is here: run `npm run build` in the package\n')
  process.exit(1)
}
