// A core is written beside its name and given it only when complete: a half-written core never carries the final
// name, and one that fails leaves nothing behind.

import { link, open, rm, type FileHandle } from 'node:fs/promises'
import { CoreBuildError } from './errors.js'

/**
 * Runs `write` on OUTPUT.partial-PID (created 0600: a core holds the process's secrets; it must not exist), then
 * links it to `output`, which must not exist either: unlike rename, link never replaces a file that appeared there
 * meanwhile. Any failure removes the partial file and is a CoreBuildError.
 */
export async function writeCoreFile<T>(output: string, write: (out: FileHandle, partial: string) => Promise<T>): Promise<T> {
  const partial = `${output}.partial-${process.pid}`
  const out = await open(partial, 'wx', 0o600)
  try {
    const result = await write(out, partial)
    await out.close()
    await link(partial, output)
    return result
  } catch (error) {
    throw error instanceof CoreBuildError ? error : new CoreBuildError((error as Error).message, { cause: error })
  } finally {
    await out.close().catch(() => {})
    await rm(partial, { force: true })
  }
}
