import { readFileSync, unwatchFile, watchFile } from 'node:fs'
import { createSecureContext, type SecureContext, type SecureContextOptions, type Server } from 'node:tls'
import { pairProblem } from '../config/tls-schema.ts'
import type { CertificateFiles, ListenerTlsConfig } from '../config/types.ts'
import { ConfigError } from '../errors.ts'
import type { Logger } from '../log.ts'

/** The certificates as last read: every pair's PEM text, and a context per SNI name. */
interface Loaded {
  config: ListenerTlsConfig
  /** The default certificate's options, as server.setSecureContext takes them. */
  defaultOptions: SecureContextOptions
  defaultContext: SecureContext
  /** Exact names, lower case. */
  byName: Map<string, SecureContext>
  /** "*.example.com" as ".example.com": matches one label in front. */
  byWildcard: Map<string, SecureContext>
}

/** Why a reload was refused: the file and what is wrong with it. */
export class CertificateProblem extends Error {
  readonly file: string
  constructor(file: string, message: string) {
    super(`${file}: ${message}`)
    this.name = 'CertificateProblem'
    this.file = file
  }
}

/** How long after a file changes the files are read, so a renewal that writes the key and the certificate one
 * after the other is read once, whole. */
const SETTLE_MS = 200

/**
 * The public listener's certificates: the default one (cert, key) and those chosen by SNI. Read at start-up and
 * again whenever a file changes on disk (a renewal by certbot or cert-manager) or update() is called (a config
 * reload): a new set applies to new handshakes only, so open connections keep theirs. A set that cannot be read
 * or does not pair up is refused whole, and the certificates in use stay.
 */
export class CertificateStore {
  readonly #logger: Logger
  readonly #servers = new Set<Server>()
  #loaded: Loaded
  #watched: string[] = []
  #settle: NodeJS.Timeout | undefined

  /**
   * Throws a ConfigError (exit 2) when a file cannot be used: the config check read them all already, so only a file
   * changed since then gets here.
   */
  constructor(config: ListenerTlsConfig, logger: Logger) {
    this.#logger = logger
    try {
      this.#loaded = load(config)
    } catch (error) {
      if (error instanceof CertificateProblem)
        throw new ConfigError([{ path: 'tls', message: error.message }])
      throw error
    }
  }

  /** The options a TLS server starts with: the default certificate, the TLS floor, and the SNI callback. */
  serverOptions(): SecureContextOptions & { SNICallback: SniCallback } {
    return { ...this.#loaded.defaultOptions, SNICallback: this.#sniCallback }
  }

  /** A server whose default certificate is replaced on every update. */
  attach(server: Server): void {
    this.#servers.add(server)
  }

  /**
   * Reads the files again (of `config` when given, a config reload's) and serves them to new handshakes. Returns
   * the problem, without changing anything, when one cannot be used.
   */
  update(config: ListenerTlsConfig = this.#loaded.config): CertificateProblem | undefined {
    let loaded: Loaded
    try {
      loaded = load(config)
    } catch (error) {
      if (!(error instanceof CertificateProblem)) throw error
      this.#logger.error(
        { file: error.file, problem: error.message },
        'the new TLS certificates cannot be used; still serving the previous ones',
      )
      return error
    }
    for (const server of this.#servers) server.setSecureContext(loaded.defaultOptions)
    const watchChanged = config !== this.#loaded.config
    this.#loaded = loaded
    if (watchChanged && this.#watched.length > 0) this.watch()
    this.#logger.info({ files: filesOf(config) }, 'TLS certificates loaded')
    return undefined
  }

  /** Looks at the files every tls.watchInterval and reads them again once they have changed. */
  watch(): void {
    this.unwatch()
    const { config } = this.#loaded
    if (config.watchInterval === 0) return
    this.#watched = filesOf(config)
    for (const file of this.#watched) {
      watchFile(file, { interval: config.watchInterval, persistent: false }, this.#changed)
    }
  }

  unwatch(): void {
    for (const file of this.#watched) unwatchFile(file, this.#changed)
    this.#watched = []
    clearTimeout(this.#settle)
  }

  /** The certificate a client asking for `servername` gets. */
  contextFor(servername: string): SecureContext {
    const { byName, byWildcard, defaultContext } = this.#loaded
    const name = servername.toLowerCase()
    const exact = byName.get(name)
    if (exact) return exact
    const dot = name.indexOf('.')
    return (dot > 0 && byWildcard.get(name.slice(dot))) || defaultContext
  }

  readonly #sniCallback: SniCallback = (servername, callback) => {
    callback(null, this.contextFor(servername))
  }

  readonly #changed = (
    current: { mtimeMs: number; ino: number },
    previous: { mtimeMs: number; ino: number },
  ) => {
    if (current.mtimeMs === previous.mtimeMs && current.ino === previous.ino) return
    clearTimeout(this.#settle)
    this.#settle = setTimeout(() => this.update(), SETTLE_MS).unref()
  }
}

type SniCallback = (
  servername: string,
  callback: (error: Error | null, context?: SecureContext) => void,
) => void

function filesOf(config: ListenerTlsConfig): string[] {
  return [...new Set([config.cert, config.key, ...config.sni.flatMap(({ cert, key }) => [cert, key])])]
}

function load(config: ListenerTlsConfig): Loaded {
  // Node's default cipher list (TLS 1.3 suites, then ECDHE with AES-GCM or ChaCha20) is the modern one; only the
  // floor is set here.
  const defaultOptions: SecureContextOptions = { ...readPair(config), minVersion: config.minVersion }
  const byName = new Map<string, SecureContext>()
  const byWildcard = new Map<string, SecureContext>()
  for (const entry of config.sni) {
    const context = createSecureContext({ ...readPair(entry), minVersion: config.minVersion })
    for (const name of entry.names) {
      if (name.startsWith('*.')) byWildcard.set(name.slice(1), context)
      else byName.set(name, context)
    }
  }
  return { config, defaultOptions, defaultContext: createSecureContext(defaultOptions), byName, byWildcard }
}

function readPair(files: CertificateFiles): { cert: Buffer; key: Buffer } {
  const cert = readFile(files.cert)
  const key = readFile(files.key)
  const problem = pairProblem(cert, key)
  if (problem) throw new CertificateProblem(`${files.cert} and ${files.key}`, problem)
  return { cert, key }
}

function readFile(file: string): Buffer {
  try {
    return readFileSync(file)
  } catch (error) {
    throw new CertificateProblem(file, `cannot be read (${(error as NodeJS.ErrnoException).code ?? error})`)
  }
}
