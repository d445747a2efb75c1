import { describe, expect, it } from 'vitest'
import { allTo, type Color } from '../../src/colors.ts'
import { RoutingTable } from '../../src/routing/table.ts'
import type { Upstream } from '../../src/routing/upstream.ts'
import { initialState, type State } from '../../src/state/state.ts'
import type { StoreStatus } from '../../src/state/store.ts'

// The table is pure bookkeeping over a snapshot: the upstreams are plain records, as in pick.test.ts.
function upstream(color: Color, name: string): Upstream {
  return { color, url: name, outstanding: 0 } as unknown as Upstream
}

const blue1 = upstream('blue', 'b1')
const blue2 = upstream('blue', 'b2')
const green1 = upstream('green', 'g1')

const at = (generation: number, changes: Partial<State> = {}): State => ({
  ...initialState('blue', new Date('2026-11-26T12:00:00Z')),
  generation,
  ...changes,
})
const green = (generation: number) => at(generation, { active: 'green', weights: allTo('green') })

function setUp(options: { status?: StoreStatus; maxStaleness?: number; now?: number } = {}) {
  const down = new Set<Upstream>()
  const applied: [number, number | undefined][] = []
  const table = new RoutingTable({
    upstreams: { blue: [blue1, blue2], green: [green1] },
    balance: { blue: 'round-robin', green: 'least-outstanding' },
    isAvailable: (candidate) => !down.has(candidate),
    storeStatus: () => options.status,
    maxStaleness: options.maxStaleness ?? 0,
    now: () => options.now ?? 0,
  })
  table.onApplied((state, previous) => applied.push([state.generation, previous?.generation]))
  return { table, down, applied }
}

describe('RoutingTable', () => {
  it('has no snapshot until a state is applied, then routes by it over the available upstreams', () => {
    const { table, down, applied } = setUp()
    expect(table.snapshot()).toBeUndefined()
    down.add(blue2)
    expect(table.apply(at(3))).toBe(true)
    const snapshot = table.snapshot()!
    expect(snapshot.state).toEqual(at(3))
    expect(snapshot.pools.blue.upstreams).toEqual([blue1])
    expect(snapshot.pools.blue.balance).toBe('round-robin')
    expect(snapshot.pools.green.upstreams).toEqual([green1])
    expect(snapshot.pools.green.balance).toBe('least-outstanding')
    expect(Object.isFrozen(snapshot)).toBe(true)
    expect(applied).toEqual([[3, undefined]])
  })

  it('applies only a state that supersedes the one applied, and tells of each with the one it replaced', () => {
    const { table, applied } = setUp()
    table.apply(at(3))
    const third = table.snapshot()
    expect(table.apply(at(2))).toBe(false)
    expect(table.apply(at(3))).toBe(false)
    expect(table.snapshot()).toBe(third)
    expect(table.apply(green(4))).toBe(true)
    // The same generation with other content: the store's truth after a raced Redis restart.
    expect(table.apply(at(4))).toBe(true)
    expect(table.snapshot()?.state.active).toBe('blue')
    expect(applied).toEqual([
      [3, undefined],
      [4, 3],
      [4, 4],
    ])
  })

  it('tells its listeners in the order they were added, each after the snapshot is in place', () => {
    const { table } = setUp()
    const heard: string[] = []
    table.onApplied((state) => heard.push(`first ${state.generation} ${table.snapshot()?.state.generation}`))
    table.onApplied((state) => heard.push(`second ${state.generation}`))
    table.apply(at(5))
    expect(heard).toEqual(['first 5 5', 'second 5'])
  })

  it('rebuilds over the same state when upstreams go in or out of service, without applying anything', () => {
    const { table, down, applied } = setUp()
    table.upstreamsChanged()
    expect(table.snapshot()).toBeUndefined()
    table.apply(at(3))
    const before = table.snapshot()!
    down.add(blue1)
    table.upstreamsChanged()
    const after = table.snapshot()!
    expect(after).not.toBe(before)
    expect(after.state).toBe(before.state)
    expect(after.pools.blue.upstreams).toEqual([blue2])
    expect(before.pools.blue.upstreams).toEqual([blue1, blue2])
    expect(applied).toEqual([[3, undefined]])
  })

  it('is ready with a state whose active pool has an upstream, and says why not otherwise', () => {
    const { table, down } = setUp()
    expect(table.readiness(false)).toEqual({
      ready: false,
      reasons: ['the routing state is not loaded (is the state store reachable?)'],
    })
    table.apply(at(1))
    expect(table.readiness(false)).toEqual({ ready: true, reasons: [] })
    expect(table.readiness(true)).toEqual({ ready: false, reasons: ['shutting down'] })
    down.add(green1)
    table.upstreamsChanged()
    expect(table.readiness(false).ready).toBe(true)
    table.apply(green(2))
    expect(table.readiness(true)).toEqual({
      ready: false,
      reasons: ['shutting down', 'the active pool (green) has no healthy upstream'],
    })
  })

  it('is not ready when cut off from the store longer than state.maxStaleness, and only then', () => {
    const cutOff = { reachable: false, lastSyncAt: 10_000 }
    const stale = setUp({ status: cutOff, maxStaleness: 5_000, now: 17_500 })
    stale.table.apply(at(1))
    expect(stale.table.readiness(false)).toEqual({
      ready: false,
      reasons: ['cut off from the state store for 7.5 s, longer than state.maxStaleness (5 s)'],
    })
    for (const fine of [
      setUp({ status: cutOff, maxStaleness: 5_000, now: 15_000 }),
      setUp({ status: cutOff, maxStaleness: 0, now: 1_000_000 }),
      setUp({ status: { reachable: true, lastSyncAt: 10_000 }, maxStaleness: 5_000, now: 1_000_000 }),
      setUp({ status: { reachable: false, lastSyncAt: undefined }, maxStaleness: 5_000, now: 1_000_000 }),
      setUp({ status: undefined, maxStaleness: 5_000, now: 1_000_000 }),
    ]) {
      fine.table.apply(at(1))
      expect(fine.table.readiness(false)).toEqual({ ready: true, reasons: [] })
    }
  })
})
