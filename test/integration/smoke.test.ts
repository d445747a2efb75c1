import { describe, expect, it } from 'vitest'
import { adminPost } from '../helpers/admin.ts'
import { useColorRig } from '../helpers/servers.ts'

describe('smoke', () => {
  const rig = useColorRig()

  it('serves the active color and flips on switch', async () => {
    let response = await fetch(rig.proxy.url + '/a')
    expect(response.headers.get('x-bluegreen-color')).toBe('blue')
    expect(((await response.json()) as { name: string }).name).toBe('blue')
    const flipped = await adminPost(rig.proxy.admin, '/switch', { to: 'green' })
    expect(flipped.status).toBe(200)
    response = await fetch(rig.proxy.url + '/b')
    expect(response.headers.get('x-bluegreen-color')).toBe('green')
    expect(((await response.json()) as { name: string }).name).toBe('green')
  })
})
