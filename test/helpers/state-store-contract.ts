// The behaviour every StateStore owes the app, written once and run against each store (file, Redis).

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { allTo } from '../../src/colors.ts'
import type { Rollout, State, StateChange } from '../../src/state/state.ts'
import type { StateStore } from '../../src/state/store.ts'
import { eventually } from './eventually.ts'

export interface StateStoreFixture {
  /** A store over fresh, empty backing state, not started yet, created with initial color blue. */
  store: StateStore
  /** Another instance over the same backing state (another process or replica), not started yet. */
  makePeer: () => Promise<StateStore>
  /** Writes invalid content into the backing state and resolves once `store` has seen (and ignored) it. */
  corrupt?: () => Promise<void>
  /**
   * Writes a state and the one it replaced into the empty backing state as versions before 0.x did, which stored
   * every change, one that altered nothing included; called before any store starts.
   */
  writeLegacy: (state: State, previous: State | null) => Promise<void>
  /** Closes every store the fixture made and removes the backing state. */
  cleanup: () => Promise<void>
}

export const toGreen: StateChange = {
  active: 'green',
  weights: allTo('green'),
  updatedBy: 'contract-test',
  reason: 'flip to green',
}
export const toBlue: StateChange = {
  active: 'blue',
  weights: allTo('blue'),
  updatedBy: 'contract-test',
  reason: 'back',
}
export const split: StateChange = {
  active: 'blue',
  weights: { blue: 90, green: 10 },
  updatedBy: 'contract-test',
  reason: 'canary',
}

/** A rollout as the state keeps it, at its first step: 10% to green from all blue. */
export function runningRollout(): Rollout {
  const now = new Date().toISOString()
  return {
    to: 'green',
    steps: [10, 100],
    stepSeconds: 60,
    step: 0,
    status: 'running',
    from: { active: 'blue', weights: allTo('blue') },
    startedAt: now,
    stepStartedAt: now,
  }
}

/** A stored state as an older version wrote it. */
function legacyState(generation: number, change: StateChange): State {
  const { active, weights, updatedBy, reason } = change
  return {
    active,
    weights,
    generation,
    updatedAt: new Date(2026, 0, generation + 1).toISOString(),
    updatedBy,
    reason,
  }
}

export function describeStateStoreContract(name: string, makeStore: () => Promise<StateStoreFixture>): void {
  describe(`StateStore contract: ${name}`, () => {
    let fixture: StateStoreFixture | undefined

    beforeEach(async () => {
      fixture = await makeStore()
    })

    afterEach(async () => {
      await fixture?.cleanup()
      fixture = undefined
    })

    /** The fixture's store and a peer, both started. */
    async function startedPair(): Promise<{ store: StateStore; peer: StateStore }> {
      const { store } = fixture!
      await store.start()
      const peer = await fixture!.makePeer()
      await peer.start()
      return { store, peer }
    }

    it('start writes the initial state at generation 0, and a peer reads the same one', async () => {
      const { store } = fixture!
      expect(store.current()).toBeUndefined()
      const initial = await store.start()
      expect(initial).toMatchObject({ active: 'blue', weights: { blue: 100, green: 0 }, generation: 0 })
      expect(Number.isNaN(Date.parse(initial.updatedAt))).toBe(false)
      expect(typeof initial.updatedBy).toBe('string')
      expect(typeof initial.reason).toBe('string')
      expect(store.current()).toEqual(initial)
      expect(await store.previous()).toBeUndefined()

      const peer = await fixture!.makePeer()
      expect(await peer.start()).toEqual(initial)
    })

    it('change bumps the generation by exactly one and returns the stored state', async () => {
      const { store } = fixture!
      await store.start()
      const before = Date.now()
      const changed = await store.change(toGreen)
      expect(changed).toMatchObject({ ...toGreen, generation: 1 })
      expect(Date.parse(changed.updatedAt)).toBeGreaterThanOrEqual(before - 1000)
      expect(store.current()).toEqual(changed)

      const next = await store.change(split, 1)
      expect(next).toMatchObject({ ...split, generation: 2 })

      const peer = await fixture!.makePeer()
      expect(await peer.start()).toEqual(next)
    })

    it('every state it hands out is frozen at every level, however it was read', async () => {
      const { store, peer } = await startedPair()
      const rollout = runningRollout()
      const committed = await store.change({ ...split, rollout })
      await eventually(() => peer.current()?.generation === committed.generation, {
        message: 'the peer to apply the change',
      })
      await store.change(toBlue)
      const handedOut: [string, State | undefined][] = [
        ['the state a change answers', committed],
        ["a peer's copy", peer.current()],
        ['the previous state', await store.previous()],
        ["a peer's previous state", await peer.previous()],
      ]
      for (const [what, state] of handedOut) {
        expect(state?.rollout, what).toBeDefined()
        // ES modules run in strict mode, where writing to a frozen object throws rather than doing nothing.
        expect(() => {
          state!.weights.blue = 0
        }, `${what}: weights`).toThrow(TypeError)
        expect(() => {
          state!.rollout!.from.weights.green = 50
        }, `${what}: rollout.from.weights`).toThrow(TypeError)
        expect(() => state!.rollout!.steps.push(100), `${what}: rollout.steps`).toThrow(TypeError)
        expect(Object.isFrozen(state), what).toBe(true)
      }
      // The caller's own rollout is not the stored one: freezing the state leaves it the caller's to change.
      rollout.step = 1
      expect(committed.rollout?.step).toBe(0)
    })

    it('previous() is the state the last change replaced', async () => {
      const { store, peer } = await startedPair()
      const initial = store.current()!
      const first = await store.change(toGreen)
      expect(await store.previous()).toEqual(initial)
      expect(await peer.previous()).toEqual(initial)

      await store.change(toBlue)
      expect(await store.previous()).toEqual(first)
      expect(await peer.previous()).toEqual(first)
    })

    it('a change to the state already in force stores nothing: the same generation, unchanged, no notification', async () => {
      const { store, peer } = await startedPair()
      const initial = store.current()!
      const seen: State[] = []
      peer.subscribe((state) => seen.push(state))
      const first = await store.change(toGreen)
      await eventually(() => seen.length === 1, { message: 'the first change at the peer' })

      // Who asks and why does not make it a change: the routing does.
      const again = { ...toGreen, updatedBy: 'someone else', reason: 'flip to green again' }
      expect(await store.change(again)).toEqual(first)
      expect(await store.commit(again)).toEqual({ state: first, changed: false })
      expect(await peer.commit(again, 1)).toEqual({ state: first, changed: false })
      expect(store.current()).toEqual(first)
      // The state it replaced is still the one before the first change: nothing was written over it.
      expect(await store.previous()).toEqual(initial)
      expect(await peer.previous()).toEqual(initial)

      // The next real change is generation 2, and the peer heard of nothing in between.
      expect(await store.commit(split)).toEqual({ state: expect.objectContaining(split), changed: true })
      await eventually(() => seen.length === 2, { message: 'the second change at the peer' })
      expect(seen.map((state) => state.generation)).toEqual([1, 2])
      const restarted = await fixture!.makePeer()
      expect((await restarted.start()).generation).toBe(2)
      expect(await restarted.previous()).toEqual(first)
    })

    it('an unchanged change still checks expectedGeneration, and is decided against the stored state', async () => {
      const { store, peer } = await startedPair()
      const first = await peer.change(toGreen, 0)
      // The store may not have heard of the peer's change yet: the stored state decides, and a stale expectation
      // is as stale as ever.
      await expect(store.commit(toGreen, 0)).rejects.toMatchObject({
        code: 'BG_GENERATION_CONFLICT',
        status: 409,
      })
      expect(await store.commit(toGreen)).toEqual({ state: first, changed: false })
      // An unchanged answer brings a store that was behind up to the state it answered.
      expect(store.current()).toEqual(first)
    })

    it('a change that starts or ends a running rollout is a change, even at the weights in force', async () => {
      const { store } = fixture!
      const initial = await store.start()
      const rollout = runningRollout()
      const canary = { ...toGreen, active: 'blue' as const, weights: { blue: 90, green: 10 }, rollout }
      const started = await store.commit(canary)
      expect(started).toMatchObject({ changed: true, state: { generation: 1, rollout } })
      // A plain change ends the running rollout: stored, though the weights stay 90/10.
      const ended = await store.commit(split)
      expect(ended.changed).toBe(true)
      expect(ended.state.generation).toBe(2)
      expect(ended.state.rollout).toBeUndefined()
      // The same routing: the state before the rollout is still the one a rollback returns to.
      expect(await store.previous()).toEqual(initial)
      // Starting one at the weights in force is a change too.
      expect((await store.commit(canary)).state).toMatchObject({ generation: 3, rollout })
      expect((await store.commit(canary)).changed).toBe(true)
      // A rollout that has ended is a record, not something running: the same routing again changes nothing.
      const done = { ...rollout, status: 'completed' as const, outcome: 'completed' }
      const completed = await store.commit({ ...toGreen, rollout: done })
      expect(completed.changed).toBe(true)
      expect(await store.commit(toGreen)).toEqual({ state: completed.state, changed: false })
      // A paused rollout is still on its way: a plain change at its weights ends it, so it is stored.
      const paused = { ...rollout, status: 'paused' as const, pausedAt: '2026-11-26T12:00:05Z' }
      expect((await store.commit({ ...canary, rollout: paused })).state).toMatchObject({ rollout: paused })
      const afterPause = await store.commit(split)
      expect(afterPause.changed).toBe(true)
      expect(afterPause.state.rollout).toBeUndefined()
    })

    it('a mirror setting is a change of its own, kept by every later change that names none', async () => {
      const { store, peer } = await startedPair()
      const blue = store.current()!
      const on = { ...toBlue, reason: 'mirror on', mirror: { enabled: true, percent: 10 } }
      const mirrored = await store.commit(on, blue.generation)
      expect(mirrored).toMatchObject({
        changed: true,
        state: { generation: 1, mirror: { enabled: true, percent: 10 } },
      })
      // The same setting again alters nothing; another share does.
      expect(await peer.commit(on)).toMatchObject({ changed: false, state: { generation: 1 } })
      const more = await peer.commit({ ...on, mirror: { enabled: true, percent: 50 } })
      expect(more.state).toMatchObject({ generation: 2, mirror: { percent: 50 } })
      // A switch through the other instance, which names no mirror setting, keeps the stored one.
      await eventually(() => expect(store.current()?.generation).toBe(2))
      const switched = await store.commit(toGreen)
      expect(switched.state).toMatchObject({
        generation: 3,
        active: 'green',
        mirror: { enabled: true, percent: 50 },
      })
      // A mirror change routes as before: a rollback still returns to the last routing that differed.
      expect(await store.previous()).toMatchObject({ active: 'blue' })
      await eventually(() => expect(peer.current()).toMatchObject({ generation: 3, mirror: { percent: 50 } }))
      await expect(store.commit({ ...toGreen, mirror: { enabled: true, percent: 0 } })).rejects.toMatchObject(
        { code: 'BG_BAD_REQUEST' },
      )
    })

    it('previous() is the last state whose routing differs from the one in force', async () => {
      const { store, peer } = await startedPair()
      const initial = store.current()!
      const green = await store.change(toGreen)
      await store.change(toGreen)
      expect(await store.previous()).toEqual(initial)
      const canary = await store.change(split)
      expect(await peer.previous()).toEqual(green)
      // Rollbacks toggle between the last two routings, however often the same one is asked for in between.
      await store.change(toGreen)
      await store.change(toGreen)
      expect(await store.previous()).toEqual(canary)
    })

    it('a state written before unchanged changes were refused, whose previous routing is the same, offers no previous', async () => {
      const green = legacyState(1, toGreen)
      const greenAgain = legacyState(2, { ...toGreen, reason: 'flip to green again' })
      await fixture!.writeLegacy(greenAgain, green)
      const { store, peer } = await startedPair()
      expect(store.current()).toEqual(greenAgain)
      // What came before generation 1 is lost; generation 1 itself is no rollback from generation 2.
      expect(await store.previous()).toBeUndefined()
      expect(await peer.previous()).toBeUndefined()
      expect(await store.commit(toGreen)).toEqual({ state: greenAgain, changed: false })
      // The next real change keeps what it replaced, as always.
      const canary = await store.change(split, 2)
      expect(await store.previous()).toEqual(greenAgain)
      expect(await peer.previous()).toEqual(greenAgain)
      await store.change(toGreen, canary.generation)
      expect(await store.previous()).toEqual(canary)
    })

    it('a state written before, whose previous routing differs, offers that previous as it always did', async () => {
      const blue = legacyState(0, { ...toBlue, reason: 'initial state' })
      const green = legacyState(1, toGreen)
      await fixture!.writeLegacy(green, blue)
      const { store } = await startedPair()
      expect(await store.previous()).toEqual(blue)
    })

    it('a stale expectedGeneration is refused with 409 BG_GENERATION_CONFLICT and changes nothing', async () => {
      const { store } = fixture!
      await store.start()
      const first = await store.change(toGreen, 0)
      await expect(store.change(toBlue, 0)).rejects.toMatchObject({
        code: 'BG_GENERATION_CONFLICT',
        status: 409,
      })
      expect(store.current()).toEqual(first)
      expect((await store.previous())?.generation).toBe(0)

      const peer = await fixture!.makePeer()
      expect(await peer.start()).toEqual(first)
    })

    it('of concurrent changes from two instances with the same expectedGeneration, exactly one wins', async () => {
      const { store, peer } = await startedPair()
      const attempts = Array.from({ length: 10 }, (_, index) =>
        (index % 2 === 0 ? store : peer).change({ ...toGreen, reason: `attempt ${index}` }, 0),
      )
      const results = await Promise.allSettled(attempts)
      const won = results.filter((result) => result.status === 'fulfilled')
      const lost = results.filter((result) => result.status === 'rejected')
      expect(won).toHaveLength(1)
      expect(won[0]!.value.generation).toBe(1)
      for (const result of lost)
        expect(result.reason).toMatchObject({ code: 'BG_GENERATION_CONFLICT', status: 409 })

      const reader = await fixture!.makePeer()
      expect(await reader.start()).toEqual(won[0]!.value)
    })

    it('a change made through a peer reaches the subscribers, once per generation, despite a throwing one', async () => {
      const { store, peer } = await startedPair()
      const throwing = vi.fn(() => {
        throw new Error('a broken listener')
      })
      const seen: State[] = []
      store.subscribe(throwing)
      store.subscribe((state) => seen.push(state))

      const changed = await peer.change(toGreen, 0)
      await eventually(() => seen.some((state) => state.generation === 1), { message: "the peer's change" })
      expect(seen[0]).toEqual(changed)
      expect(store.current()).toEqual(changed)
      expect(throwing).toHaveBeenCalledWith(changed)

      // The store's own change notifies at once; the next peer change proves no duplicate arrived in between.
      await store.change(split, 1)
      expect(seen.map((state) => state.generation)).toEqual([1, 2])
      await peer.change(toBlue, 2)
      await eventually(() => seen.length === 3, { message: "the peer's second change" })
      expect(seen.map((state) => state.generation)).toEqual([1, 2, 3])
    })

    it('an unsubscribed listener is no longer called', async () => {
      const { store, peer } = await startedPair()
      const removed: State[] = []
      const kept: State[] = []
      const unsubscribe = store.subscribe((state) => removed.push(state))
      store.subscribe((state) => kept.push(state))
      unsubscribe()
      await peer.change(toGreen)
      await eventually(() => kept.length === 1, { message: 'the change to reach the kept listener' })
      expect(removed).toEqual([])
    })

    it('the state survives a restart', async () => {
      const { store } = fixture!
      await store.start()
      const first = await store.change(toGreen)
      const last = await store.change(split)
      await store.close()

      const restarted = await fixture!.makePeer()
      expect(await restarted.start()).toEqual(last)
      expect(await restarted.previous()).toEqual(first)
      expect(await restarted.change(toBlue, 2)).toMatchObject({ generation: 3 })
    })

    it('a change taking all traffic from a color puts it on standby, kept by every change until it gets traffic again', async () => {
      const { store, peer } = await startedPair()
      const switched = await store.change(toGreen)
      // The default keepFor: 24 h from the change.
      expect(switched.standby).toEqual({
        color: 'blue',
        since: switched.updatedAt,
        keepUntil: new Date(Date.parse(switched.updatedAt) + 24 * 3600_000).toISOString(),
        generation: 1,
      })
      await eventually(() => expect(peer.current()).toEqual(switched))
      // A change that alters nothing, or a rollout record, does not move it.
      const again = await peer.commit({ ...toGreen, reason: 'again' })
      expect(again.state.standby).toEqual(switched.standby)
      await store.close()
      const restarted = await fixture!.makePeer()
      expect((await restarted.start()).standby).toEqual(switched.standby)
      // Traffic back to the color ends its standby; the switch takes green's, which starts green's.
      const canary = await restarted.change(split)
      expect(canary.standby).toBeUndefined()
      const back = await restarted.change(toBlue)
      expect(back.standby).toMatchObject({
        color: 'green',
        since: back.updatedAt,
        generation: back.generation,
      })
    })

    it('a mirror change during standby neither starts nor ends it, and is not what a rollback returns to', async () => {
      const { store, peer } = await startedPair()
      const initial = store.current()!
      const switched = await store.change(toGreen)
      const on = await peer.commit({
        ...toGreen,
        reason: 'mirror on',
        mirror: { enabled: true, percent: 20 },
      })
      expect(on.state).toMatchObject({ generation: switched.generation + 1, mirror: { percent: 20 } })
      expect(on.state.standby).toEqual(switched.standby)
      const off = await store.commit({
        ...toGreen,
        reason: 'mirror off',
        mirror: { enabled: false, percent: 20 },
      })
      expect(off.state.standby).toEqual(switched.standby)
      // The rollback target is still the routing before the switch, not a mirror change.
      expect(await peer.previous()).toEqual(initial)
      // A rollback to blue (traffic back to the standby color) ends blue's standby and starts green's; the mirror
      // setting, named by neither, is kept.
      const back = await peer.change({ ...toBlue, reason: 'rollback' })
      expect(back).toMatchObject({
        mirror: { enabled: false, percent: 20 },
        standby: { color: 'green', since: back.updatedAt, generation: back.generation },
      })
    })

    it('invalid content written into the backing state is ignored and the last good state stays', async (context) => {
      if (!fixture!.corrupt) return context.skip()
      const { store } = fixture!
      await store.start()
      const good = await store.change(toGreen)
      const seen: State[] = []
      store.subscribe((state) => seen.push(state))

      await fixture!.corrupt()
      expect(store.current()).toEqual(good)
      expect(seen).toEqual([])
      // A store starting now must not paper over it with a fresh initial state.
      const peer = await fixture!.makePeer()
      await expect(peer.start()).rejects.toMatchObject({ code: 'BG_STATE_UNAVAILABLE', status: 503 })
      expect(store.current()).toEqual(good)
    })
  })
}
