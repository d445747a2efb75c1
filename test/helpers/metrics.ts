// Reading the admin API's /metrics the way a scraper does.

/** Parses a Prometheus text exposition into "name{labels}" -> value. */
export function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    samples.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return samples
}

export async function scrapeMetrics(admin: string): Promise<Map<string, number>> {
  return parseMetrics(await (await fetch(`${admin}/metrics`)).text())
}
