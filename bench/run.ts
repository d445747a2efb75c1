// `npm run bench`: every benchmark question in turn; each prints its table and writes bench/results/NAME.json.
import { cpus } from 'node:os'
import { metricsCost } from './metrics-cost.ts'
import { propagation } from './propagation.ts'
import { rollback } from './rollback.ts'
import { throughput } from './throughput.ts'

console.log(`node ${process.version}, ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'})`)
await throughput()
await propagation()
await rollback()
await metricsCost()
process.exit(0)
