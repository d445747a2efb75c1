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
    // The scheme is case-insensitive (RFC 9110 11.1): "bearer" and "BEARER" are the same as "Bearer".
    const match = /^bearer +(\S+) *$/i.exec(req.headers.authorization ?? '')
    if (!match) return false
    return timingSafeEqual(sha256(match[1]!), this.digest)
  }
}

function sha256(value: string): Buffer {
  return createHash('sha256').update(value).digest()
}
