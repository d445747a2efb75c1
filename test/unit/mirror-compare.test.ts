import { describe, expect, it } from 'vitest'
import {
  type CapturedResponse,
  coveredBy,
  differences,
  fieldPattern,
  MAX_FIELDS,
} from '../../src/mirror/compare.ts'
import {
  bodyPreview,
  DiffLog,
  isSecretHeader,
  redactedHeaders,
  redactedPairs,
  redactedTarget,
} from '../../src/mirror/diffs.ts'
import {
  FIRST_SAMPLES,
  MAX_NOISE_FIELDS,
  MAX_ROUTE_CHARS,
  NoiseMemory,
  routeKey,
} from '../../src/mirror/noise.ts'

function answer(
  body: unknown,
  status = 200,
  headers: Record<string, string> = { 'content-type': 'application/json' },
): CapturedResponse {
  const text = typeof body === 'string' ? body : JSON.stringify(body)
  return { status, headers, body: Buffer.from(text), truncated: false }
}

const plain = { headers: ['content-type'], ignored: () => false }

describe('differences', () => {
  it('finds nothing between equal answers, JSON or not', () => {
    expect(differences(answer({ a: 1 }), answer({ a: 1 }), plain)).toEqual([])
    expect(differences(answer('hello'), answer('hello'), plain)).toEqual([])
  })

  it('names the status, each chosen header and each differing JSON path', () => {
    const live = answer({ user: { name: 'ann', roles: ['a', 'b'] }, n: null, gone: 1 }, 200)
    const other = answer({ user: { name: 'bob', roles: ['a', 'c', 'd'] }, n: 0, added: 2 }, 201, {
      'content-type': 'text/plain',
    })
    expect(differences(live, other, plain)).toEqual([
      'status',
      'header:content-type',
      '$.user.name',
      '$.user.roles[1]',
      '$.user.roles[2]',
      '$.n',
      '$.gone',
      '$.added',
    ])
  })

  it('compares bodies that are not both JSON byte for byte, and a truncated one too', () => {
    expect(differences(answer('<p>a</p>'), answer('<p>b</p>'), plain)).toEqual(['body'])
    expect(differences(answer({ a: 1 }), answer('{"a":1} '), plain)).toEqual([])
    const cut = { ...answer({ a: 1, b: 2 }), truncated: true }
    expect(differences(cut, answer({ b: 2, a: 1 }), plain)).toEqual(['body'])
  })

  it('leaves out ignored fields, and names at most MAX_FIELDS', () => {
    const ignore = new Set(['$.meta', '$.items[*].id'])
    const options = { headers: [], ignored: (field: string) => coveredBy(field, ignore) }
    const live = answer({ meta: { time: 1 }, items: [{ id: 1, v: 1 }], v: 1 })
    const other = answer({ meta: { time: 2 }, items: [{ id: 2, v: 1 }], v: 2 })
    expect(differences(live, other, options)).toEqual(['$.v'])
    const many = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${i}`, i]))
    const others = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${i}`, -i - 1]))
    expect(differences(answer(many), answer(others), plain)).toHaveLength(MAX_FIELDS)
  })

  it('generalises list indexes and covers a field by an ancestor', () => {
    expect(fieldPattern('$.a[3].b[10]')).toBe('$.a[*].b[*]')
    expect(coveredBy('$.a[3].b.c', new Set(['$.a[*].b']))).toBe(true)
    expect(coveredBy('$.ab', new Set(['$.a']))).toBe(false)
    expect(coveredBy('status', new Set(['$.a']))).toBe(false)
  })
})

describe('NoiseMemory', () => {
  it("bounds what a client's paths and an upstream's field names can make it keep", () => {
    expect(routeKey('GET', '/users/7?token=x')).toBe('GET /users/7')
    const long = routeKey('GET', `/${'a'.repeat(10_000)}?q=1`)
    expect(long.length).toBeLessThanOrEqual(MAX_ROUTE_CHARS + 6)
    expect(long.endsWith('…')).toBe(true)
    const noise = new NoiseMemory()
    // An answer keyed by ids names new fields on every sample.
    for (let sample = 0; sample < 100; sample++)
      noise.learn(
        'GET /a',
        Array.from({ length: 20 }, (_, i) => `$.id${sample}x${i}`),
      )
    expect(noise.fieldsOf('GET /a').size).toBe(MAX_NOISE_FIELDS)
  })

  it('samples a route until it has FIRST_SAMPLES, then at the rate; remembers what differed per route', () => {
    const noise = new NoiseMemory()
    for (let i = 0; i < FIRST_SAMPLES; i++) {
      expect(noise.wantsSample('GET /a', 0, 0.5)).toBe(true)
      noise.learn('GET /a', ['$.items[0].time'])
    }
    expect(noise.wantsSample('GET /a', 0, 0.5)).toBe(false)
    expect(noise.wantsSample('GET /a', 0.6, 0.5)).toBe(true)
    expect([...noise.fieldsOf('GET /a')]).toEqual(['$.items[*].time'])
    expect(noise.fieldsOf('GET /b').size).toBe(0)
  })

  it('knows a route once one sample was learned from, even one with no difference; clear() forgets it', () => {
    const noise = new NoiseMemory()
    expect(noise.knows('GET /a')).toBe(false)
    noise.learn('GET /a', [])
    expect(noise.knows('GET /a')).toBe(true)
    expect(noise.knows('GET /b')).toBe(false)
    noise.clear()
    expect(noise.knows('GET /a')).toBe(false)
  })
})

describe('diffs', () => {
  it('redacts credentials and anything named like a secret', () => {
    for (const name of [
      'Authorization',
      'cookie',
      'set-cookie',
      'x-api-key',
      'proxy-authorization',
      'x-session-id',
      'X-Upstream-Token',
    ])
      expect(isSecretHeader(name)).toBe(true)
    expect(isSecretHeader('content-type')).toBe(false)
    expect(redactedHeaders({ 'set-cookie': ['a=1', 'b=2'], etag: 'x' })).toEqual({
      'set-cookie': '[redacted]',
      etag: 'x',
    })
    expect(redactedPairs(['Authorization', 'Bearer t', 'Accept', 'a', 'accept', 'b'])).toEqual({
      authorization: '[redacted]',
      accept: 'a, b',
    })
  })

  it('redacts the values of query parameters named like a secret, in any case or encoding', () => {
    expect(redactedTarget('/a?page=2')).toBe('/a?page=2')
    expect(redactedTarget('/a')).toBe('/a')
    expect(redactedTarget('/a?access_token=t&page=2&API_KEY=k&sig=s&%74oken=e&flag&code=c&x=%')).toBe(
      '/a?access_token=[redacted]&page=2&API_KEY=[redacted]&sig=[redacted]&%74oken=[redacted]&flag&code=[redacted]&x=%',
    )
  })

  it('redacts the values of JSON members and form fields named like a secret in a body preview', () => {
    const json = Buffer.from(
      '{"user":"ann","access_token":"h7-1","nested":{"Client_Secret":"h7-\\"2"},"sessionId":"h7-3","n":1}',
    )
    expect(bodyPreview(json)).toBe(
      '{"user":"ann","access_token":"[redacted]","nested":{"Client_Secret":"[redacted]"},"sessionId":"[redacted]","n":1}',
    )
    expect(bodyPreview(Buffer.from('grant=pw&password=h7-4&api_key=h7-5&name=ann'))).toBe(
      'grant=pw&password=[redacted]&api_key=[redacted]&name=ann',
    )
    // A value the preview cuts short is redacted all the same.
    const cut = bodyPreview(Buffer.from(`{"pad":"${'x'.repeat(2020)}","token":"h7-6-${'y'.repeat(100)}"}`))
    expect(cut).not.toContain('h7-6')
    expect(cut.endsWith('"token":"[redacted]"')).toBe(true)
  })

  it('keeps the latest N, newest first, and ranks the most frequent differences', () => {
    const log = new DiffLog(3)
    const diff = (path: string, fields: string[]) => ({
      at: new Date().toISOString(),
      method: 'GET',
      path,
      colors: { live: 'blue', mirror: 'green' },
      status: { live: 200, mirror: 200 },
      fields,
      requestHeaders: {},
      headers: { live: {}, mirror: {} },
      bodies: { live: '', mirror: '', truncated: false },
    })
    for (const path of ['/a', '/b?x=1', '/b?x=2', '/b?x=3']) log.add(diff(path, ['$.v']))
    expect(log.latest().map((each) => each.path)).toEqual(['/b?x=3', '/b?x=2', '/b?x=1'])
    expect(log.top(5)).toEqual([{ method: 'GET', path: '/b', field: '$.v', count: 3 }])
    expect(log.top(5, Date.now() + 60_000)).toEqual([])
  })
})
