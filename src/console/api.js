// The admin API as the console calls it: JSON in and out, the operator's token (this tab's sessionStorage only,
// never a cookie, so no request carries it unless this module adds it) sent as a bearer header with every call
// (changes, and GET /mirror/diffs, which holds users' data), and the API's errors shown with their code, status
// and message.

import { byId, h } from './dom.js'

const TOKEN_KEY = 'bluegreen-admin-token'

let token = sessionStorage.getItem(TOKEN_KEY) ?? ''

export function currentToken() {
  return token
}

/** Keeps the token for this tab (or forgets it, given ''). */
export function useToken(value) {
  token = value
  if (token) sessionStorage.setItem(TOKEN_KEY, token)
  else sessionStorage.removeItem(TOKEN_KEY)
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `the admin API answered HTTP ${status}`)
    this.status = status
    this.code = body?.error?.code ?? `HTTP_${status}`
  }
}

export async function api(method, path, body) {
  const headers = { accept: 'application/json' }
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (token) headers.authorization = `Bearer ${token}`
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  })
  const text = await response.text()
  let parsed = null
  try {
    parsed = text ? JSON.parse(text) : null
  } catch {
    parsed = null
  }
  if (!response.ok) throw new ApiError(response.status, parsed)
  return parsed
}

export function showAlert(parts, ok = false) {
  const alert = byId('alert')
  alert.replaceChildren(...parts)
  alert.classList.toggle('ok', ok)
  alert.hidden = false
}

export function showError(error, what) {
  if (error instanceof ApiError) {
    const parts = [
      `${what} failed: `,
      h('code', { text: error.code }),
      ` (HTTP ${error.status}): ${error.message}`,
    ]
    if (error.status === 409 && error.code === 'BG_GENERATION_CONFLICT') {
      parts.push(
        '. Someone else changed the state first; nothing was overwritten. The page now shows the new state.',
      )
    }
    if (error.status === 401) {
      parts.push('. Enter the right token in "Admin token".')
      byId('token').focus()
    }
    showAlert(parts)
  } else {
    showAlert([`${what} failed: ${error.message}`])
  }
}
