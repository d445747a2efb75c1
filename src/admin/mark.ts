/**
 * The header every admin answer carries, errors included: how the CLI knows it reached the admin API and not, say,
 * the proxy port, which would pass a POST /switch on to the application. Its own file so the CLI loads nothing else.
 */
export const ADMIN_MARK = 'x-bluegreen-admin'
