import { mkdir, open, readdir, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { Redis } from 'ioredis'

// Claims: of the processes that observe the same event, the first to claim its id is the one to act on it (send
// its notification). Kept long enough that a process restarting and seeing the event again finds it claimed.

export const CLAIM_KEEP_MS = 7 * 24 * 3600 * 1000

/** With Redis: SET NX on `<key>:notify:<id>`, kept CLAIM_KEEP_MS. */
export async function claimInRedis(client: Redis, key: string, id: string, owner: string): Promise<boolean> {
  return (await client.set(`${key}:notify:${id}`, owner, 'PX', CLAIM_KEEP_MS, 'NX')) === 'OK'
}

/**
 * With the file store: a file created exclusively (O_EXCL) in `directory`, which the processes sharing one state
 * file (--workers, or several on one host) share. Claims older than CLAIM_KEEP_MS are removed as new ones are made.
 */
export async function claimInDirectory(directory: string, id: string, owner: string): Promise<boolean> {
  await mkdir(directory, { recursive: true })
  void prune(directory)
  try {
    const file = await open(join(directory, fileNameOf(id)), 'wx')
    await file.writeFile(`${owner}\n`)
    await file.close()
    return true
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw error
  }
}

/** An id as a file name: what is not a plain character is escaped, so two ids never share a file. */
function fileNameOf(id: string): string {
  return encodeURIComponent(id).replaceAll('*', '%2A').replace(/^\./, '%2E')
}

async function prune(directory: string): Promise<void> {
  try {
    const now = Date.now()
    for (const name of await readdir(directory)) {
      const file = join(directory, name)
      const { mtimeMs } = await stat(file)
      if (now - mtimeMs > CLAIM_KEEP_MS) await unlink(file)
    }
  } catch {
    // Another process pruned the same file first; what is left is tried again with the next claim.
  }
}
