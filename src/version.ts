import { readFileSync } from 'node:fs'

/** What is running: GET /version, `bluegreen version --json` and the bluegreen_build_info metric. */
export interface BuildInfo {
  version: string
  node: string
  /** The git commit the package was built from; only a build (`npm run build`) records it. */
  commit?: string
}

// package.json sits one folder up both from src/ (a clone) and from dist/ (the package), so the version is read
// from the one place npm reads it. build-info.json is written next to the compiled modules by scripts/build.js.
const packageJson = new URL('../package.json', import.meta.url)
const builtInfo = new URL('./build-info.json', import.meta.url)

let cached: BuildInfo | undefined

export function buildInfo(): BuildInfo {
  cached ??= {
    version: (JSON.parse(readFileSync(packageJson, 'utf8')) as { version: string }).version,
    node: process.version,
    ...readBuiltCommit(),
  }
  return cached
}

function readBuiltCommit(): { commit?: string } {
  try {
    const { commit } = JSON.parse(readFileSync(builtInfo, 'utf8')) as { commit?: unknown }
    return typeof commit === 'string' ? { commit } : {}
  } catch {
    return {} // run from the sources, or built outside a git checkout
  }
}
