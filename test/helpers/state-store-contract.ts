// The behaviour every StateStore owes the app, written once and run against each store (file, Redis).

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { allTo, type State, type StateChange } from '../../src/state/state.ts'
import type { StateStore } from '../../src/state/store.ts'
import { eventually } from './eventually.ts'

export interface StateStoreFixture {
  /** A store over fresh, empty backing state, not started yet, created with initial color blue. */
  store: StateStore
  /** Another instance over the same backing state (another process or replica), not started yet. */
  makePeer: () => Promise<StateStore>
  /** Writes invalid content into the backing state and resolves once `store` has seen (and ignored) it. */
  corrupt?: () => Promise<void>
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
