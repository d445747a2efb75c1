import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { type App, startApp } from './app.ts'
import type { Color } from './colors.ts'
import { buildConfig } from './config/schema.ts'
import type { Logger } from './log.ts'

/** A stand-in for a deployed application: it answers every request with its color. */
export function sampleUpstream(color: Color): Server {
  return createServer((req, res) => {
    const body = JSON.stringify({ color, message: `hello from ${color}`, method: req.method, path: req.url })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as AddressInfo).port
}

export interface Demo {
  app: App
  close(): Promise<void>
  instructions: string
}

/** `bluegreen demo`: two sample upstreams, the proxy and the admin API on the file store, all on loopback. */
export async function startDemo(options: {
  port: number
  adminPort: number
  stateDir: string
  logger: Logger
}): Promise<Demo> {
  const blue = sampleUpstream('blue')
  const green = sampleUpstream('green')
  const [bluePort, greenPort] = await Promise.all([listen(blue), listen(green)])
  const config = buildConfig(
    {
      listen: `127.0.0.1:${options.port}`,
      admin: { listen: `127.0.0.1:${options.adminPort}` },
      pools: {
        blue: { upstreams: [`http://127.0.0.1:${bluePort}`] },
        green: { upstreams: [`http://127.0.0.1:${greenPort}`] },
      },
      state: { store: 'file', path: join(options.stateDir, 'state.json') },
      routing: { preview: { header: 'x-bluegreen-preview' } },
      shutdown: { grace: '5s' },
    },
    process.env,
  )
  let app: App
  try {
    app = await startApp(config, options.logger)
  } catch (error) {
    blue.close()
    green.close()
    throw error
  }
  const proxy = `http://127.0.0.1:${app.proxyAddress.port}`
  const admin = `http://127.0.0.1:${app.adminAddress.port}`
  const instructions = [
    '',
    'bluegreen demo is running',
    `  proxy   ${proxy}   (blue -> 127.0.0.1:${bluePort}, green -> 127.0.0.1:${greenPort})`,
    `  admin   ${admin}   (the console: open ${admin}/ in a browser)`,
    `  state   ${config.state.path}`,
    '',
    'Try it:',
    `  curl -i ${proxy}/                                  # answered by the active color`,
    `  curl -s ${admin}/state                             # the routing state`,
    `  curl -s -X POST ${admin}/switch -d '{"to":"green"}'   # flip to green`,
    `  curl -s -X POST ${admin}/weights -d '{"blue":90,"green":10}'   # a 90/10 split`,
    `  curl -s -H 'x-bluegreen-preview: green' ${proxy}/  # preview the other color`,
    `  node bin/bluegreen.js switch blue --admin ${admin}  # the same with the CLI`,
    '',
    'Ctrl-C stops it.',
    '',
  ].join('\n')
  return {
    app,
    instructions,
    close: async () => {
      await app.close()
      await Promise.all([blue, green].map((server) => new Promise((resolve) => server.close(resolve))))
    },
  }
}
