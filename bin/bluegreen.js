#!/usr/bin/env node
// The sources are TypeScript run directly by Node's type stripping (Node >= 22.18), so there is no build step.
import '../src/cli.ts'
