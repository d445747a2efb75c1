// A small client of the admin API, for the CLI and for scripts.

export interface AdminClientOptions {
  url: string
  token?: string | undefined
  timeoutMs?: number
}

export class AdminCallError extends Error {
  readonly status: number
  readonly code: string

  constructor(status: number, code: string, message: string) {
    super(message)
    this.name = 'AdminCallError'
    this.status = status
    this.code = code
  }
}

export async function callAdmin(
  options: AdminClientOptions,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<unknown> {
  const headers: Record<string, string> = { accept: 'application/json' }
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (options.token) headers.authorization = `Bearer ${options.token}`
  let response: Response
  try {
    response = await fetch(new URL(path, options.url), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
    })
  } catch (error) {
    // fetch says only "fetch failed"; the cause says why (ECONNREFUSED, ENOTFOUND, "bad port", a timeout).
    const detail = (error as { cause?: { code?: string; message?: string } }).cause
    const cause = detail?.code ?? detail?.message ?? (error as Error).message
    throw new AdminCallError(
      0,
      'BG_ADMIN_UNREACHABLE',
      `cannot reach the admin API at ${options.url} (${cause})`,
    )
  }
  const text = await response.text()
  let parsed: unknown
  try {
    parsed = text === '' ? undefined : JSON.parse(text)
  } catch {
    parsed = undefined
  }
  if (!response.ok) {
    const error = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error
    throw new AdminCallError(
      response.status,
      error?.code ?? `HTTP_${response.status}`,
      error?.message ?? `the admin API answered ${response.status}`,
    )
  }
  return parsed
}
