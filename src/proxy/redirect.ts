import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { ListenAddress } from '../config/types.ts'
import { ListenError } from '../errors.ts'
import { sendError } from './respond.ts'

/** The host part of a Host header: "example.com" of "example.com:8080", "[::1]" of "[::1]:8080". */
const HOST = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?$/

/**
 * `tls.redirectFrom`: a plain-HTTP listener that sends every request to the same host and path over HTTPS with a
 * 308 (the method and body are kept, unlike a 301). Nothing is proxied from it.
 */
export class HttpsRedirect {
  readonly server: Server
  readonly #from: ListenAddress
  /** The port the HTTPS listener is reached on: left out of the Location when it is 443. */
  readonly #httpsPort: () => number

  constructor(from: ListenAddress, httpsPort: () => number) {
    this.#from = from
    this.#httpsPort = httpsPort
    this.server = createServer({ noDelay: true }, this.#handle)
  }

  listen(): Promise<AddressInfo> {
    const { host, port } = this.#from
    return new Promise((resolve, reject) => {
      const failed = (error: NodeJS.ErrnoException) =>
        reject(new ListenError('HTTPS redirect', host, port, error))
      this.server.once('error', failed)
      this.server.listen(port, host, () => {
        this.server.off('error', failed)
        resolve(this.server.address() as AddressInfo)
      })
    })
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    this.server.closeAllConnections()
    await closed
  }

  readonly #handle = (req: IncomingMessage, res: ServerResponse): void => {
    const host = HOST.exec(req.headers.host ?? '')?.[1]
    if (host === undefined) {
      sendError(res, 'BG_BAD_REQUEST', 'a Host header is needed to redirect to https', { close: true })
      return
    }
    const port = this.#httpsPort()
    const location = `https://${host}${port === 443 ? '' : `:${port}`}${req.url ?? '/'}`
    res.writeHead(308, { location, 'content-length': '0', 'cache-control': 'no-store' })
    res.end()
  }
}
