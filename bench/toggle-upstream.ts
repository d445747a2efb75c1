// A benchmark upstream whose answers can be turned bad: POST /__fail makes every later request answer 500,
// POST /__heal makes them 200 again. Answers name the color given on the command line.
import { createServer } from 'node:http'

const port = Number(process.argv[2] ?? 0)
const color = process.argv[3] ?? 'green'
let failing = false
createServer((req, res) => {
  if (req.method === 'POST' && (req.url === '/__fail' || req.url === '/__heal')) {
    failing = req.url === '/__fail'
    res.end('ok')
    return
  }
  const body = `${color}\n`
  res.writeHead(failing ? 500 : 200, {
    'content-type': 'text/plain',
    'content-length': Buffer.byteLength(body),
  })
  res.end(body)
}).listen(port, '127.0.0.1')
