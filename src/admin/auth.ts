import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'

/**
 * Bearer-token check in constant time. Both sides are hashed first, so neither the comparison's duration nor
 * an early length mismatch tells an attacker anything about the token.
 */
export class TokenCheck {
  private readonly digest: Buffer | undefined

  constructor(token: string | null) {
    this.digest = token ? sha256(token) : undefined
  }

  get required(): boolean {
    return this.digest !== undefined
  }

  allows(req: IncomingMessage): boolean {
    if (!this.digest) return true
    const header = req.headers.authorization
    if (typeof header !== 'string' || !header.startsWith('Bearer ')) return false
    return timingSafeEqual(sha256(header.slice(7).trim()), this.digest)
  }
}

function sha256(value: string): Buffer {
  return createHash('sha256').update(value).digest()
}
