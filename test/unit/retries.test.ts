import { describe, expect, it } from 'vitest'
import { RetryBudget, RetryPolicy } from '../../src/proxy/retries.ts'

/** How many retries the budget grants in a row at `now`. */
function drain(budget: RetryBudget, now: number, color: 'blue' | 'green' = 'blue'): number {
  let granted = 0
  while (budget.tryRetry(color, now)) granted++
  return granted
}

describe('RetryBudget', () => {
  it('grants minPerSecond for each second of its 10 s window, with no traffic at all', () => {
    expect(drain(new RetryBudget({ percent: 20, minPerSecond: 3 }), 0)).toBe(30)
    expect(drain(new RetryBudget({ percent: 20, minPerSecond: 0 }), 0)).toBe(0)
  })

  it('adds percent of the requests of the last 10 s, rounded down', () => {
    const budget = new RetryBudget({ percent: 20, minPerSecond: 0 })
    for (let i = 0; i < 1004; i++) budget.requestStarted('blue', i * 5)
    expect(drain(budget, 5020)).toBe(200)
  })

  it('keeps the colors apart', () => {
    const budget = new RetryBudget({ percent: 50, minPerSecond: 0 })
    for (let i = 0; i < 10; i++) budget.requestStarted('green', 100)
    expect(drain(budget, 200, 'blue')).toBe(0)
    expect(drain(budget, 200, 'green')).toBe(5)
  })

  it('forgets requests and retries older than its window', () => {
    const budget = new RetryBudget({ percent: 20, minPerSecond: 1 })
    for (let i = 0; i < 100; i++) budget.requestStarted('blue', 1000)
    expect(drain(budget, 1500)).toBe(30)
    // Still within 10 s of both: nothing more.
    expect(drain(budget, 10_900)).toBe(0)
    // The second they were in has left the window: the floor again, in full.
    expect(drain(budget, 11_000)).toBe(10)
    // Second 21 takes second 11's slot: the 10 retries it held are gone with it.
    budget.requestStarted('blue', 21_000)
    expect(drain(budget, 21_000)).toBe(10)
  })
})

describe('RetryPolicy', () => {
  it('sends again only the methods and failures it is configured for', () => {
    const policy = new RetryPolicy({
      max: 1,
      methods: ['GET', 'DELETE'],
      on: ['reset'],
      budget: { percent: 20, minPerSecond: 3 },
    })
    expect(policy.mayResend('GET', 'reset')).toBe(true)
    expect(policy.mayResend('DELETE', 'reset')).toBe(true)
    expect(policy.mayResend('POST', 'reset')).toBe(false)
    expect(policy.mayResend('GET', 'header_timeout')).toBe(false)
    expect(policy.mayResend('GET', 'protocol')).toBe(false)
  })
})
