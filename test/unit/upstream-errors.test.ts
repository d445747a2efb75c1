import { describe, expect, it } from 'vitest'
import { classifyUpstreamError } from '../../src/proxy/upstream-errors.ts'

const failure = (code: string) => classifyUpstreamError(Object.assign(new Error(code), { code }))

describe('classifyUpstreamError: tls', () => {
  it('names a failed handshake or certificate check tls, answered 502', () => {
    for (const code of [
      'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      'SELF_SIGNED_CERT_IN_CHAIN',
      'DEPTH_ZERO_SELF_SIGNED_CERT',
      'CERT_HAS_EXPIRED',
      'ERR_TLS_CERT_ALTNAME_INVALID',
      'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA',
      'ERR_SSL_SSL/TLS_ALERT_HANDSHAKE_FAILURE',
      'EPROTO',
    ]) {
      expect(failure(code), code).toEqual({ reason: 'tls', code: 'BG_UPSTREAM_UNREACHABLE' })
    }
  })

  it('leaves the other reasons as they were', () => {
    expect(failure('ECONNRESET').reason).toBe('reset')
    expect(failure('UND_ERR_SOCKET').reason).toBe('reset')
    expect(failure('ECONNREFUSED').reason).toBe('refused')
    expect(failure('SOMETHING_ELSE').reason).toBe('other')
  })
})
