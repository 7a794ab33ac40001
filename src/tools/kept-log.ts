// A failed tool's log outlives the work directory it was written in (which every failure path removes): it is copied
// to a private directory of snap's logs, and the error message names the file. That directory is /var/log/procsnap
// for root, $XDG_STATE_HOME/procsnap (~/.local/state/procsnap) for others, or PROCSNAP_LOG_DIR; it is capped, so a host
// where restores keep failing does not fill up with logs.

import { chmodSync, closeSync, existsSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, readSync, rmSync, statSync, writeSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { configValue } from '../environment.js'

/** The newest logs kept, by count and by total size: older ones are removed as new ones come. */
export const KEPT_LOGS_MAX_FILES = 50
export const KEPT_LOGS_MAX_BYTES = 50 << 20
/** A kept log's own bound: its head (criu's version and options) and its tail (where it failed) of a larger one. */
const HEAD_BYTES = 1 << 20
const TAIL_BYTES = 7 << 20

export function keptLogDir(): string {
  const given = configValue('LOG_DIR')
  if (given) return given
  if (process.getuid?.() === 0) return '/var/log/procsnap'
  const state = process.env['XDG_STATE_HOME'] || join(homedir(), '.local', 'state')
  return join(state, 'procsnap')
}

/**
 * The log directory, made 0700 if missing; undefined when it is not a directory of this user's that only it can
 * write (a link, or one someone else could put files in): root must not write through another user's links.
 */
function ownDir(dir: string): string | undefined {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const st = lstatSync(dir)
    if (!st.isDirectory() || st.uid !== (process.getuid?.() ?? st.uid)) return undefined
    if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700)
    return dir
  } catch {
    return undefined
  }
}

/** Copies at most HEAD_BYTES + TAIL_BYTES of `from` into a new file `to` (0600), marking what was left out. */
function copyBounded(from: string, to: string): void {
  const src = openSync(from, 'r')
  try {
    const size = fstatSync(src).size
    const dst = openSync(to, 'wx', 0o600)
    try {
      const copy = (start: number, length: number) => {
        const buf = Buffer.allocUnsafe(Math.min(length, 1 << 20))
        for (let at = start, left = length; left > 0; ) {
          const n = readSync(src, buf, 0, Math.min(buf.length, left), at)
          if (n === 0) break
          writeSync(dst, buf, 0, n)
          at += n
          left -= n
        }
      }
      if (size <= HEAD_BYTES + TAIL_BYTES) copy(0, size)
      else {
        copy(0, HEAD_BYTES)
        writeSync(dst, `\n[snap: ${size - HEAD_BYTES - TAIL_BYTES} bytes of the log left out here]\n`)
        copy(size - TAIL_BYTES, TAIL_BYTES)
      }
    } finally {
      closeSync(dst)
    }
  } finally {
    closeSync(src)
  }
}

/** Keeps the newest logs within KEPT_LOGS_MAX_FILES and KEPT_LOGS_MAX_BYTES, removing the oldest beyond. */
export function pruneKeptLogs(dir: string, keep?: string): void {
  let logs: { path: string; mtimeMs: number; size: number }[] = []
  try {
    logs = readdirSync(dir)
      .filter((n) => n.startsWith('snap-') && n.endsWith('.log'))
      .flatMap((n) => {
        try {
          const st = statSync(join(dir, n))
          return st.isFile() ? [{ path: join(dir, n), mtimeMs: st.mtimeMs, size: st.size }] : []
        } catch {
          return []
        }
      })
  } catch {
    return
  }
  // Newest first; the log just kept stays whatever its size, it is the one the error names.
  logs.sort((a, b) => (a.path === keep ? -1 : b.path === keep ? 1 : b.mtimeMs - a.mtimeMs))
  let total = 0
  logs.forEach((log, i) => {
    total += log.size
    if (i > 0 && (i >= KEPT_LOGS_MAX_FILES || total > KEPT_LOGS_MAX_BYTES)) rmSync(log.path, { force: true })
  })
}

export function keepLog(logFile: string, label: string): string | undefined {
  if (!existsSync(logFile)) return undefined
  const dir = ownDir(keptLogDir())
  if (!dir) return undefined
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  const dest = join(dir, `snap-${label}-${stamp}-${process.pid}.log`)
  try {
    copyBounded(logFile, dest)
  } catch {
    rmSync(dest, { force: true })
    return undefined
  }
  pruneKeptLogs(dir, dest)
  return dest
}
