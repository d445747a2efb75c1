/** One answer of steady traffic: its status, the color that served it, and the proxy's BG_* code if it gave one. */
export interface Answer {
  status: number
  color: string | null
  code: string | undefined
}

export interface SteadyTraffic {
  /** The answers so far, in order; the array grows while the traffic runs. */
  readonly answers: Answer[]
  /** Stops after the request in flight and resolves with every answer. */
  stop(): Promise<Answer[]>
}

/**
 * One request at a time to `url/work/N`, `everyMs` apart, until stopped, `limit` requests are made or the proxy is
 * gone: the traffic of a quiet service (everyMs 500) or a busy one (everyMs 5).
 */
export function steadyTraffic(url: string, options: { everyMs: number; limit?: number }): SteadyTraffic {
  const answers: Answer[] = []
  const limit = options.limit ?? Number.POSITIVE_INFINITY
  let running = true
  const loop = (async () => {
    for (let i = 0; running && i < limit; i++) {
      const response = await fetch(`${url}/work/${i}`)
      const text = await response.text()
      const code = text.startsWith('{')
        ? (JSON.parse(text) as { error?: { code: string } }).error?.code
        : undefined
      answers.push({ status: response.status, color: response.headers.get('x-bluegreen-color'), code })
      await new Promise((resolve) => setTimeout(resolve, options.everyMs))
    }
  })().catch(() => {})
  return {
    answers,
    stop: async () => {
      running = false
      await loop
      return answers
    },
  }
}
