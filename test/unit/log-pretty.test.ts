import { describe, expect, it } from 'vitest'
import { prettyLine } from '../../src/log-pretty.ts'

const line = (entry: Record<string, unknown>) =>
  JSON.stringify({ level: 30, time: '2026-11-30T10:25:46.271Z', pid: 7, ...entry })

describe('prettyLine', () => {
  it('puts time, level, part and message first, then the other fields as key=value', () => {
    expect(
      prettyLine(line({ part: 'state', msg: 'state loaded', generation: 3, weights: { blue: 90 } }), {
        color: false,
      }),
    ).toBe('10:25:46.271 INFO  [state] state loaded  generation=3 weights={"blue":90}\n')
  })

  it("shows an expected error's message and code, and a bug's stack, indented below the line", () => {
    const expected = line({
      level: 50,
      msg: 'no routing state yet',
      err: {
        type: 'BlueGreenError',
        code: 'BG_STATE_UNAVAILABLE',
        message: 'Redis at 127.0.0.1:6379 is unreachable',
      },
    })
    expect(prettyLine(expected, { color: false })).toBe(
      '10:25:46.271 ERROR no routing state yet\n    Redis at 127.0.0.1:6379 is unreachable (BG_STATE_UNAVAILABLE)\n',
    )
    const bug = line({
      level: 60,
      msg: 'crashed',
      err: { message: 'x', stack: 'TypeError: x\n    at f (a.ts:1)' },
    })
    expect(prettyLine(bug, { color: false })).toBe(
      '10:25:46.271 FATAL crashed\n    TypeError: x\n        at f (a.ts:1)\n',
    )
  })

  it('colors the level only when asked, and passes anything but JSON through', () => {
    expect(prettyLine(line({ level: 40, msg: 'w' }), { color: true })).toBe(
      '10:25:46.271 \x1b[33mWARN \x1b[0m w\n',
    )
    expect(prettyLine('not json\n', { color: false })).toBe('not json\n')
  })
})
