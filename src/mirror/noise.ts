import { fieldPattern } from './compare.ts'

// Noise learned as Twitter's Diffy learns it: the live color is asked the same request twice, and whatever differs
// between its two answers (timestamps, request ids, nonces) differs for reasons that have nothing to do with the
// release, so it is not counted as a difference between the colors. Remembered per route (method and path).

/** Routes remembered; beyond it the oldest is forgotten (a path with ids in it must not grow memory forever). */
const MAX_ROUTES = 1000
/**
 * Noise fields remembered per route: an answer keyed by ids (`{"<uuid>": ...}`) names new fields on every sample.
 * Beyond it, nothing more is learned for the route: its other differences count.
 */
export const MAX_NOISE_FIELDS = 100
/** How much of a request's path a route keeps: a client's paths, however long, take bounded room here. */
export const MAX_ROUTE_CHARS = 200

/** A request's route as the mirror keeps figures and noise for it: method and path, without the query, bounded. */
export function routeKey(method: string, target: string): string {
  const query = target.indexOf('?')
  const path = query === -1 ? target : target.slice(0, query)
  return `${method.slice(0, 20)} ${path.length > MAX_ROUTE_CHARS ? `${path.slice(0, MAX_ROUTE_CHARS)}…` : path}`
}
/** A route is always sampled until it has this many samples, so noise is known before its differences count. */
export const FIRST_SAMPLES = 2

interface RouteNoise {
  samples: number
  fields: Set<string>
}

export class NoiseMemory {
  readonly #routes = new Map<string, RouteNoise>()

  /** Whether this request should also be sent to the live color a second time. */
  wantsSample(route: string, rate: number, random: number): boolean {
    const known = this.#routes.get(route)
    return known === undefined || known.samples < FIRST_SAMPLES || random < rate
  }

  /** What differed between two live answers to one request on this route. */
  learn(route: string, fields: readonly string[]): void {
    let known = this.#routes.get(route)
    if (known === undefined) {
      if (this.#routes.size >= MAX_ROUTES) this.#routes.delete(this.#routes.keys().next().value!)
      known = { samples: 0, fields: new Set() }
      this.#routes.set(route, known)
    }
    known.samples++
    for (const field of fields) {
      if (known.fields.size >= MAX_NOISE_FIELDS) break
      known.fields.add(fieldPattern(field))
    }
  }

  /** Whether a sample of this route has been learned from, so its noise is known (though maybe not all of it). */
  knows(route: string): boolean {
    return (this.#routes.get(route)?.samples ?? 0) > 0
  }

  /** Forgets every route (the comparison rules changed). */
  clear(): void {
    this.#routes.clear()
  }

  /** The noise fields learned for a route (empty when none). */
  fieldsOf(route: string): ReadonlySet<string> {
    return this.#routes.get(route)?.fields ?? EMPTY
  }

  /** Every route with noise, for GET /mirror. */
  summary(limit: number): { routes: number; noisy: { route: string; samples: number; fields: string[] }[] } {
    const noisy: { route: string; samples: number; fields: string[] }[] = []
    for (const [route, known] of this.#routes) {
      if (known.fields.size === 0) continue
      if (noisy.length < limit) noisy.push({ route, samples: known.samples, fields: [...known.fields] })
    }
    return { routes: this.#routes.size, noisy }
  }
}

const EMPTY: ReadonlySet<string> = new Set()
