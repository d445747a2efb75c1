// Question: is this tree faster or slower than another revision? `node bench/compare.ts REV` checks REV out into a
// temporary git worktree (sharing this tree's node_modules), starts `bluegreen serve` from both on one fast
// upstream, and alternates rounds between them (pinned as in peers.ts): req/s and CPU per request, and the median
// of each round's ratio, which is what to quote for a change. On a shared machine single rounds swing by 15% or
// more; more rounds (BENCH_COMPARE_ROUNDS) narrow the median, nothing narrows a single round.
import { execFile } from 'node:child_process'
import { mkdtemp, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import {
  type CpuSample,
  freePort,
  LOAD_CORE,
  loadWithCpu,
  median,
  medianOfRounds,
  PROXY_CORE,
  pin,
  pinLoadGenerator,
  REPO,
  startBluegreen,
  startFastUpstream,
  stopProcess,
  table,
  unpinLoadGenerator,
  writeResult,
  wrkLoad,
} from './lib.ts'

const ROUNDS = Number(process.env.BENCH_COMPARE_ROUNDS ?? 9)
const SECONDS = Number(process.env.BENCH_COMPARE_SECONDS ?? 3)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)

const git = promisify(execFile)

export async function compare(revision: string): Promise<Record<string, unknown>> {
  const { stdout } = await git('git', ['-C', REPO, 'rev-parse', '--short', revision])
  const commit = stdout.trim()
  const worktree = await mkdtemp(join(tmpdir(), 'bluegreen-compare-'))
  await git('git', ['-C', REPO, 'worktree', 'add', '--detach', worktree, commit])
  await symlink(join(REPO, 'node_modules'), join(worktree, 'node_modules'))
  const placement = await pinLoadGenerator()
  const upstreamPort = await freePort()
  const upstream = await startFastUpstream(upstreamPort)
  await pin(upstream.child.pid, LOAD_CORE)
  const direct = `http://127.0.0.1:${upstreamPort}`
  const config = async () => ({
    admin: { listen: `127.0.0.1:${await freePort()}` },
    pools: { blue: { upstreams: [direct] }, green: { upstreams: [direct] } },
  })
  const contenders = [
    {
      name: `${commit} (${revision})`,
      proxy: await startBluegreen(await freePort(), await config(), { root: worktree }),
    },
    { name: 'this tree', proxy: await startBluegreen(await freePort(), await config()) },
  ]
  const samples: Record<string, CpuSample[]> = {}
  try {
    for (const { proxy } of contenders) await pin(proxy.child.pid, PROXY_CORE)
    for (const { proxy } of contenders) await wrkLoad(`${proxy.url}/`, 3, CONNECTIONS)
    for (let round = 0; round < ROUNDS; round++) {
      for (const { name, proxy } of contenders) {
        samples[name] ??= []
        samples[name]!.push(
          await loadWithCpu([proxy.child.pid!], SECONDS, () =>
            wrkLoad(`${proxy.url}/`, SECONDS, CONNECTIONS),
          ),
        )
      }
    }
  } finally {
    await unpinLoadGenerator()
    for (const { proxy } of contenders) await stopProcess(proxy.child)
    await stopProcess(upstream.child)
    await git('git', ['-C', REPO, 'worktree', 'remove', '--force', worktree])
    await rm(worktree, { recursive: true, force: true })
  }

  const [base, ours] = contenders.map(({ name }) => samples[name]!) as [CpuSample[], CpuSample[]]
  const rows = contenders.map(({ name }) => {
    const list = samples[name]!
    return {
      tree: name,
      'req/s (median)': Math.round(median(list.map((s) => s.requestsPerSecond))),
      'CPU µs/req (median)': Number(median(list.map((s) => s.cpuMicrosPerRequest)).toFixed(1)),
      'p99 ms': median(list.map((s) => s.latencyP99Ms)),
      errors: list.reduce((sum, s) => sum + s.errors + s.non2xx, 0),
    }
  })
  const perRound = ours.map((sample, round) => sample.requestsPerSecond / base[round]!.requestsPerSecond)
  const verdict = {
    'this tree over the other, req/s (median of rounds)': Number(median(perRound).toFixed(3)),
    'the rounds': perRound.map((ratio) => ratio.toFixed(2)).join(' '),
    'CPU per request, the other over this tree': Number(
      medianOfRounds(
        ours,
        base,
        (mine, theirs) => theirs.cpuMicrosPerRequest / mine.cpuMicrosPerRequest,
      ).toFixed(3),
    ),
  }
  console.log(
    `\ncompare: this tree against ${commit} (${revision}), wrk -t1 -c${CONNECTIONS}, ${ROUNDS} alternated rounds ` +
      `of ${SECONDS}s; ${placement}\n`,
  )
  console.log(table(rows))
  console.log('')
  console.log(table([verdict]))
  const result = { revision, commit, rounds: ROUNDS, seconds: SECONDS, placement, rows, verdict, samples }
  console.log(`\nwritten to ${await writeResult('compare', result)}`)
  return result
}

if (import.meta.main) {
  const revision = process.argv[2]
  if (!revision) {
    console.error('usage: node bench/compare.ts REVISION (a commit, tag or branch to compare this tree with)')
    process.exit(2)
  }
  await compare(revision)
  process.exit(0)
}
