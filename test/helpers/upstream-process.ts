// An upstream in a process of its own, so that a test can kill it with SIGKILL the way an instance crashes: the
// kernel then closes every connection it had, with whatever was in flight on them. Started by spawnUpstream()
// (servers.ts): argv[2] is its name, argv[3] (optional) the ms after which it closes an idle keep-alive connection.
// Its own process matters there too: its idle timer then races the proxy's reuse of the connection as a remote
// server's does. It answers every request with its name, except those to /hold/..., which
// it reports on stdout and never answers.
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

const name = process.argv[2] ?? 'upstream'
const server = createServer(async (req, res) => {
  let bodyLength = 0
  for await (const chunk of req) bodyLength += (chunk as Buffer).length
  if (req.url?.startsWith('/hold/')) {
    process.stdout.write(`${JSON.stringify({ held: `${req.method} ${req.url}`, bodyLength })}\n`)
    return
  }
  // An explicit Connection header keeps Node from adding its `Keep-Alive: timeout=N` hint, as many servers (Go's
  // net/http, nginx by default) send none: undici honors a hint (minus 2 s), and would close the connection first.
  res.writeHead(200, { 'content-type': 'application/json', connection: 'keep-alive' })
  res.end(JSON.stringify({ name, method: req.method, url: req.url, bodyLength }))
})
const keepAliveTimeout = Number(process.argv[3] ?? 0)
if (keepAliveTimeout > 0) {
  server.keepAliveTimeout = keepAliveTimeout
  // Node 24 keeps an idle connection open 1 s past keepAliveTimeout by default; many servers do not.
  server.keepAliveTimeoutBuffer = 0
}
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`)
})
