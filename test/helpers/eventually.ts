// Integration tests wait on conditions, never on fixed sleeps (Traefik's integration/try).

export async function eventually<T>(
  check: () => T | Promise<T>,
  {
    timeout = 5000,
    interval = 10,
    message = 'condition',
  }: { timeout?: number; interval?: number; message?: string } = {},
): Promise<Exclude<T, undefined | null | false>> {
  const deadline = Date.now() + timeout
  let lastError: unknown
  for (;;) {
    try {
      const result = await check()
      if (result !== false && result !== undefined && result !== null)
        return result as Exclude<T, undefined | null | false>
    } catch (error) {
      lastError = error
    }
    if (Date.now() > deadline) {
      const cause = lastError instanceof Error ? `: ${lastError.message}` : ''
      throw new Error(`timed out after ${timeout} ms waiting for ${message}${cause}`)
    }
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
}
