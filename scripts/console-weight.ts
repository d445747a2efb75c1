// The console's weight as a browser downloads it: the page and everything it loads, gzip-compressed as the admin
// listener sends them (and uncompressed, for comparison). Reported in README ("Console").
//   node scripts/console-weight.ts
import { mkdtempSync, rmSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startApp } from '../src/app.ts'
import { buildConfig } from '../src/config/schema.ts'
import { createLogger } from '../src/log.ts'

const dir = mkdtempSync(join(tmpdir(), 'bluegreen-weight-'))
const config = buildConfig(
  {
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0' },
    pools: { blue: { upstreams: ['http://127.0.0.1:9'] }, green: { upstreams: ['http://127.0.0.1:9'] } },
    state: { store: 'file', path: join(dir, 'state.json') },
  },
  process.env,
)
const app = await startApp(config, createLogger({ level: 'error', sync: true }))

/** The bytes on the wire for a path (content-length as sent) and the body, decompressed or not. */
function get(path: string, encoding: string): Promise<{ bytes: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port: app.adminAddress.port, path, headers: { 'accept-encoding': encoding } },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('end', () =>
          resolve({
            bytes: Number(res.headers['content-length']),
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        )
      },
    )
    req.on('error', reject)
    req.end()
  })
}

try {
  const page = await get('/', 'identity')
  const paths = ['/', ...[...page.body.matchAll(/(?:src|href)="(\/[^"]+)"/g)].map((match) => match[1]!)]
  let plain = 0
  let gzip = 0
  for (const path of paths) {
    const [raw, compressed] = await Promise.all([get(path, 'identity'), get(path, 'gzip')])
    plain += raw.bytes
    gzip += compressed.bytes
    console.log(
      `${path.padEnd(40)} ${String(raw.bytes).padStart(7)} B  ${String(compressed.bytes).padStart(6)} B gzip`,
    )
  }
  console.log(`${'total'.padEnd(40)} ${String(plain).padStart(7)} B  ${String(gzip).padStart(6)} B gzip`)
} finally {
  await app.close()
  rmSync(dir, { recursive: true, force: true })
}
