import { type ServerResponse, STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Color } from '../colors.ts'
import { type AnsweredCode, errorBody, statusOf } from '../errors.ts'

export interface ErrorResponseOptions {
  colorHeader?: string | null
  color?: Color
  /** Close the connection after this response (shutting down, or the request cannot be trusted). */
  close?: boolean
}

/** A proxy-generated error, with its code's status: the contract's short JSON body, never an HTML page or a stack trace. */
export function sendError(
  res: ServerResponse,
  code: AnsweredCode,
  message: string,
  options: ErrorResponseOptions = {},
): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const body = errorBody(code, message)
  const headers: string[] = [
    'content-type',
    'application/json; charset=utf-8',
    'content-length',
    String(Buffer.byteLength(body)),
    'cache-control',
    'no-store',
  ]
  if (options.colorHeader && options.color) headers.push(options.colorHeader, options.color)
  if (options.close) res.shouldKeepAlive = false
  res.writeHead(statusOf(code), headers)
  res.end(body)
}

/**
 * The same error as a raw HTTP/1.1 response, for a socket that was never handed a ServerResponse (upgrades,
 * CONNECT). `extra` is further header lines, such as `allow: GET`.
 */
export function rawErrorResponse(code: AnsweredCode, message: string, extra: string[] = []): string {
  const status = statusOf(code)
  const body = errorBody(code, message)
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n${extra.map((line) => `${line}\r\n`).join('')}` +
    `\r\n${body}`
  )
}

/** How long a refused raw socket waits for its client to close after the answer, before it is destroyed. */
const REFUSED_LINGER_MS = 1_000

/**
 * Answers a raw socket and closes it. The listener allows half-open sockets, so a client that never closes its
 * side would keep the socket forever; what it still sends is read and dropped meanwhile, so that closing never
 * meets unread data (which resets the connection, and can lose the answer on the way).
 */
export function refuseSocket(socket: Duplex, response: string): void {
  socket.end(response)
  socket.resume()
  const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref()
  socket.once('close', () => clearTimeout(timer))
}
