// A peer for bench/peers.ts: the minimal http-proxy-3 reverse proxy most Node users would write, with a
// keep-alive agent. Usage: node bench/peers/http-proxy-3.ts PORT UPSTREAM_URL
import { Agent, createServer } from 'node:http'
import { createProxyServer } from 'http-proxy-3'

const [port, target] = process.argv.slice(2)
const proxy = createProxyServer({ target, agent: new Agent({ keepAlive: true }), xfwd: true })
proxy.on('error', (_error, _req, res) => {
  if ('writeHead' in res && !res.headersSent) res.writeHead(502)
  res.end()
})
createServer((req, res) => proxy.web(req, res)).listen(Number(port), '127.0.0.1')
