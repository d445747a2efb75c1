// `npm run bench`: every benchmark question in turn; each prints its table and writes bench/results/NAME.json.
import { cpus, loadavg } from 'node:os'
import { latency } from './latency.ts'
import { memory } from './memory.ts'
import { metricsCost } from './metrics-cost.ts'
import { mirror } from './mirror.ts'
import { peers } from './peers.ts'
import { propagation } from './propagation.ts'
import { reload } from './reload.ts'
import { rollback } from './rollback.ts'
import { switching } from './switching.ts'
import { throughput } from './throughput.ts'
import { tlsBench } from './tls.ts'
import { workers } from './workers.ts'

console.log(`node ${process.version}, ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'})`)
// Anything else running on the machine skews every figure: say how busy it was when the run began.
console.log(
  `load average at start: ${loadavg()
    .map((value) => value.toFixed(2))
    .join(' ')}`,
)
await throughput()
await peers()
await tlsBench()
await latency()
await switching()
await propagation()
await rollback()
await reload()
await metricsCost()
await mirror()
await memory()
await workers()
process.exit(0)
