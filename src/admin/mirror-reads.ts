import type { IncomingMessage, ServerResponse } from 'node:http'
import { BlueGreenError } from '../errors.ts'
import type { Mirror } from '../proxy/mirror.ts'
import { sendJson } from './http.ts'

// Reading this replica's mirror: GET /mirror (its setting and figures) and GET /mirror/diffs (the latest
// differences; users' data, so server.ts asks for the token). POST /mirror is a change like any other (changes.ts).

type Read = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>

/** The two reads, each 404 BG_NOT_FOUND when this proxy does not mirror. */
export function mirrorReads(mirror: Mirror | undefined): { status: Read; diffs: Read } {
  const mirroring = (): Mirror => {
    if (!mirror) throw new BlueGreenError('BG_NOT_FOUND', 'this proxy does not mirror')
    return mirror
  }
  return {
    status: async (_req, res) => sendJson(res, 200, await mirroring().status()),
    diffs: (req, res) => {
      const found = mirroring()
      const raw = new URL(req.url ?? '/', 'http://admin').searchParams.get('limit')
      const limit = raw === null ? found.config.diffs : Number(raw)
      if (!Number.isInteger(limit) || limit < 1) {
        throw new BlueGreenError('BG_BAD_REQUEST', 'limit must be a whole number from 1 up')
      }
      sendJson(res, 200, { diffs: found.diffs.latest(limit) })
    },
  }
}
