import pino from 'pino'
import { describe, expect, it } from 'vitest'
import { Closers } from '../../src/app/closers.ts'

function setUp() {
  const lines: string[] = []
  const closers = new Closers(pino({ level: 'error' }, { write: (line: string) => void lines.push(line) }))
  const ran: string[] = []
  const logged = () =>
    lines.map((line) => JSON.parse(line) as { part: string; msg: string; err: { message: string } })
  return { closers, ran, logged }
}

describe('Closers', () => {
  it('closes the parts in the reverse order they were added, one after the other', async () => {
    const { closers, ran } = setUp()
    for (const name of ['upstreams', 'store', 'proxy']) {
      closers.add(name, async () => {
        ran.push(`${name} closing`)
        await new Promise((resolve) => setImmediate(resolve))
        ran.push(`${name} closed`)
      })
    }
    await closers.close()
    expect(ran).toEqual([
      'proxy closing',
      'proxy closed',
      'store closing',
      'store closed',
      'upstreams closing',
      'upstreams closed',
    ])
  })

  it('closes the others when one fails, logs the failure, and rejects with it at the end', async () => {
    const { closers, ran, logged } = setUp()
    closers.add('upstreams', () => void ran.push('upstreams'))
    closers.add('store', async () => {
      throw new Error('store gone')
    })
    closers.add('admin', () => {
      throw new Error('admin stuck')
    })
    await expect(closers.close()).rejects.toThrow('admin stuck')
    expect(ran).toEqual(['upstreams'])
    expect(logged().map(({ part, msg, err }) => [part, msg, err.message])).toEqual([
      ['admin', 'could not close the admin', 'admin stuck'],
      ['store', 'could not close the store', 'store gone'],
    ])
  })

  it('aborts with the quick way where one is given, and only logs what fails', async () => {
    const { closers, ran, logged } = setUp()
    closers.add(
      'upstreams',
      () => void ran.push('upstreams closed'),
      () => void ran.push('upstreams destroyed'),
    )
    closers.add('store', () => void ran.push('store closed'))
    closers.add('health', () => {
      throw new Error('health stuck')
    })
    await closers.abort()
    expect(ran).toEqual(['store closed', 'upstreams destroyed'])
    expect(logged().map(({ part, msg }) => [part, msg])).toEqual([['health', 'could not abort the health']])
  })

  it('closes each part once, whatever is called again', async () => {
    const { closers, ran } = setUp()
    closers.add('store', () => void ran.push('store'))
    await closers.close()
    await closers.close()
    await closers.abort()
    expect(ran).toEqual(['store'])
    closers.add('late', () => void ran.push('late'))
    await closers.close()
    expect(ran).toEqual(['store', 'late'])
  })
})
