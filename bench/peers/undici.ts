// A peer for bench/peers.ts: the floor of bluegreen's own stack, a node:http server handing each request to an
// undici Pool through the dispatch API with nothing else (no routing, header rewriting, metrics or logs). The gap
// between it and bluegreen is what bluegreen's features cost. Usage: node bench/peers/undici.ts PORT UPSTREAM_URL
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { type Dispatcher, Pool } from 'undici'

const [port, upstream] = process.argv.slice(2)
const pool = new Pool(upstream!, { connections: 128, pipelining: 1 })

class PassThrough implements Dispatcher.DispatchHandler {
  private readonly res: ServerResponse
  constructor(res: ServerResponse) {
    this.res = res
  }
  onRequestStart(): void {}
  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    this.res.writeHead(statusCode, headers)
  }
  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.res.write(chunk)
  }
  onResponseEnd(): void {
    this.res.end()
  }
  onResponseError(_controller: Dispatcher.DispatchController | undefined, error: Error): void {
    if (this.res.headersSent) this.res.destroy(error)
    else this.res.writeHead(502).end()
  }
}

createServer((req: IncomingMessage, res: ServerResponse) => {
  pool.dispatch(
    { path: req.url!, method: req.method!, headers: req.rawHeaders, body: null },
    new PassThrough(res),
  )
}).listen(Number(port), '127.0.0.1')
