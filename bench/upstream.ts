// The benchmark upstream: answers every request with a fixed 13-byte body, as fast as Node can.
import { createServer } from 'node:http'

const body = Buffer.from('hello, world\n')
const port = Number(process.argv[2] ?? 0)
createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length })
  res.end(body)
}).listen(port, '127.0.0.1').keepAliveTimeout = 65_000
