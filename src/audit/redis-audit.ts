import type { Redis } from 'ioredis'
import { onRedis } from '../state/redis-connection.ts'
import type { AuditEvent, AuditTrail } from './audit.ts'

/**
 * The Redis store's audit trail: a stream capped at `keep` entries, shared by every replica. The cap is exact, not
 * "~": at the rate people change routing, trimming one entry per XADD costs nothing, and with "~" Redis trims only
 * whole nodes of 100 entries, so a small `keep` would not be kept at all.
 */
export class RedisAuditTrail implements AuditTrail {
  readonly #client: Redis
  readonly #key: string
  readonly #keep: number

  constructor(client: Redis, stateKey: string, keep: number) {
    this.#client = client
    this.#key = `${stateKey}:events`
    this.#keep = keep
  }

  async record(event: AuditEvent): Promise<void> {
    await onRedis(this.#client, () =>
      this.#client.xadd(this.#key, 'MAXLEN', String(this.#keep), '*', 'event', JSON.stringify(event)),
    )
  }

  async recent(limit: number): Promise<AuditEvent[]> {
    const entries = await onRedis(this.#client, () =>
      this.#client.xrevrange(this.#key, '+', '-', 'COUNT', limit),
    )
    const events: AuditEvent[] = []
    for (const [, fields] of entries) {
      const index = fields.indexOf('event')
      try {
        if (index !== -1) events.push(JSON.parse(fields[index + 1]!) as AuditEvent)
      } catch {
        // Someone else's entry in our stream; skipped.
      }
    }
    return events
  }

  async close(): Promise<void> {}
}
