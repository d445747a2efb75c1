import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminPost, echoUpstream, startProxy, type TestProxy, type TestServer } from '../helpers/servers.ts'

describe('smoke', () => {
  let blue: TestServer
  let green: TestServer
  let proxy: TestProxy
  beforeAll(async () => {
    blue = await echoUpstream('blue')
    green = await echoUpstream('green')
    proxy = await startProxy({ blue: [blue.url], green: [green.url] })
  })
  afterAll(async () => {
    await proxy?.close()
    await blue?.close()
    await green?.close()
  })

  it('serves the active color and flips on switch', async () => {
    let response = await fetch(proxy.url + '/a')
    expect(response.headers.get('x-bluegreen-color')).toBe('blue')
    expect(((await response.json()) as { name: string }).name).toBe('blue')
    const flipped = await adminPost(proxy.admin, '/switch', { to: 'green' })
    expect(flipped.status).toBe(200)
    response = await fetch(proxy.url + '/b')
    expect(response.headers.get('x-bluegreen-color')).toBe('green')
    expect(((await response.json()) as { name: string }).name).toBe('green')
  })
})
