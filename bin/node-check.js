// Plain JavaScript that any Node.js parses, importing nothing of the proxy: on a Node.js too old for the sources,
// this says so in one line and exits 2, instead of an "Unknown file extension" or a crash deep in a dependency.
// Imported first by bin/bluegreen.js; run first by `npm start` and `npm test`.
import { readFileSync } from 'node:fs'

const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
// engines.node is one ">=MAJOR.MINOR" bound (the only form package.json uses).
const [, needMajor, needMinor] = /^>=\s*(\d+)\.(\d+)/.exec(manifest.engines.node).map(Number)
const [major, minor] = process.versions.node.split('.').map(Number)

if (major < needMajor || (major === needMajor && minor < needMinor)) {
  process.stderr.write(
    `bluegreen-proxy needs Node.js >= ${needMajor}.${needMinor}; this is ${process.version}\n`,
  )
  process.exit(2)
}
