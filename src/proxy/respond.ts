import { type ServerResponse, STATUS_CODES } from 'node:http'
import { type ErrorCode, errorBody } from '../errors.ts'
import type { Color } from '../state/state.ts'

export interface ErrorResponseOptions {
  colorHeader?: string | null
  color?: Color
  /** Close the connection after this response (shutting down, or the request cannot be trusted). */
  close?: boolean
}

/** A proxy-generated error: the contract's short JSON body, never an HTML page or a stack trace. */
export function sendError(
  res: ServerResponse,
  status: number,
  code: ErrorCode,
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
  res.writeHead(status, headers)
  res.end(body)
}

/** The same error as a raw HTTP/1.1 response, for a socket that was never handed a ServerResponse (upgrades). */
export function rawErrorResponse(status: number, code: ErrorCode, message: string): string {
  const body = errorBody(code, message)
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
  )
}
