// `npm run bench`: every benchmark question in turn; each prints its table and writes bench/results/NAME.json.
import { cpus } from 'node:os'
import { propagation } from './propagation.ts'
import { throughput } from './throughput.ts'

console.log(`node ${process.version}, ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'})`)
await throughput()
await propagation()
process.exit(0)
