// Where the bundle goes: checked before the target is touched, so a bad path costs nothing.

import { accessSync, constants, existsSync, lstatSync, readFileSync, realpathSync, statfsSync, statSync } from 'node:fs'
import { basename, dirname, relative, resolve } from 'node:path'
import { isSnapError, OutputPathError } from '../errors.js'
import { EXTENSION, type Compression } from './compression.js'

/** snap-COMM-PID-TIME.tar.zst; an encrypted bundle is named for what it is, an age file (.tar.zst.age), so that
 *  nobody hands it to zstd or tar. */
export function defaultOutputName(comm: string, pid: number, at: Date, compression: Compression, encrypted = false): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
  const safeComm = comm.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 32) || 'process'
  return `snap-${safeComm}-${pid}-${stamp}${EXTENSION[compression]}${encrypted ? '.age' : ''}`
}

function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}

/**
 * The output's directory must exist, be a directory we can write, and not be world-writable without the sticky bit
 * (anyone could swap our file); the output must not exist or be a symlink; and the filesystem needs room for the
 * core, the images and the bundle at once (estimateBytes).
 */
export function checkOutputPath(output: string, estimateBytes: number): string {
  const path = resolve(output)
  const dir = dirname(path)
  let dirStat
  try {
    dirStat = statSync(dir)
  } catch {
    throw new OutputPathError(`output directory ${dir} does not exist`, 'create it or choose another --output')
  }
  if (!dirStat.isDirectory()) throw new OutputPathError(`${dir} is not a directory`, 'choose an --output inside a directory')
  try {
    accessSync(dir, constants.W_OK | constants.X_OK)
  } catch {
    throw new OutputPathError(`output directory ${dir} is not writable`, 'choose another --output')
  }
  if ((dirStat.mode & 0o002) !== 0 && (dirStat.mode & 0o1000) === 0)
    throw new OutputPathError(`output directory ${dir} is world-writable without the sticky bit`, 'choose a private directory')
  let existing
  try {
    existing = lstatSync(path)
  } catch {
    existing = undefined
  }
  if (existing?.isSymbolicLink()) throw new OutputPathError(`output ${path} is a symlink; refusing to follow it`, 'choose another --output')
  if (existing) throw new OutputPathError(`output ${path} already exists`, 'choose another --output; snap never overwrites')
  const fs = statfsSync(dir)
  const free = Number(fs.bavail) * Number(fs.bsize)
  if (free < estimateBytes)
    throw new OutputPathError(
      `not enough room in ${dir} (filesystem ${filesystemOf(dir)}): ${humanBytes(free)} free, about ${humanBytes(estimateBytes)} needed`,
      'free space or give --output on a larger filesystem',
    )
  return path
}

/**
 * The filesystem a path is on, as a person finds it in `df`: its mount point and type ("/var/tmp (ext4)"), from the
 * longest mount point in /proc/self/mountinfo that holds the path. A full disk is named by it, not only by the
 * directory written to.
 */
export function filesystemOf(path: string): string {
  let real: string
  let mountinfo: string
  try {
    real = realpathSync(path)
    mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')
  } catch {
    return 'unknown filesystem'
  }
  const unescape = (f: string) => f.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
  let best: { at: string; type: string } | undefined
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ')
    const dash = fields.indexOf('-')
    if (fields.length < 5 || dash < 0) continue
    const at = unescape(fields[4]!)
    const inside = at === '/' || real === at || real.startsWith(at.endsWith('/') ? at : `${at}/`)
    // Later lines are mounted over earlier ones at the same point: the last wins, as the kernel resolves it.
    if (inside && (!best || at.length >= best.at.length)) best = { at, type: fields[dash + 1] ?? '?' }
  }
  return best ? `${best.at} (${best.type})` : 'unknown filesystem'
}

/** The filesystem of a path that may be gone: that of its nearest ancestor still there. */
function filesystemNear(path: string): string {
  let at = resolve(path)
  while (!existsSync(at) && dirname(at) !== at) at = dirname(at)
  return filesystemOf(at)
}

/** ENOSPC or EDQUOT, from the error or the errors it wraps (a CoreBuildError keeps the write's error as its cause). */
export function noSpaceCode(e: unknown): 'ENOSPC' | 'EDQUOT' | undefined {
  for (let at = e, depth = 0; at instanceof Error && depth < 8; at = at.cause, depth++) {
    const code = (at as NodeJS.ErrnoException).code
    if (code === 'ENOSPC' || /No space left on device/i.test(at.message)) return 'ENOSPC'
    if (code === 'EDQUOT' || /Disk quota exceeded/i.test(at.message)) return 'EDQUOT'
  }
  return undefined
}

/** The file a failed write names (Node's errno errors carry it), from the error or the errors it wraps. */
function pathOf(e: unknown): string | undefined {
  for (let at = e, depth = 0; at instanceof Error && depth < 8; at = at.cause, depth++) {
    const path = (at as NodeJS.ErrnoException).path
    if (typeof path === 'string') return path
  }
  return undefined
}

/** Whether the output directory, or the work directory snap keeps in it, has been removed. */
export function outputDirGone(dir: string, workDir?: string): boolean {
  return !existsSync(dir) || (workDir !== undefined && !existsSync(workDir))
}

const inside = (dir: string, path: string) => {
  const rel = relative(resolve(dir), resolve(path))
  return rel === '' || (!rel.startsWith('..') && !rel.startsWith('/'))
}

/**
 * A write that failed because of where the output goes, as the one line that says so (exit 7): a full disk or a
 * quota (ENOSPC, EDQUOT, wherever in the error's causes), or the output directory (or the work directory snap keeps in
 * it) removed meanwhile, which makes every later write fail with ENOENT or a tool fail for want of its files. Each
 * names the directory and its filesystem, as `df` shows it. Anything else, and a failure that already tells its own
 * story (a signal, a deadline, a process gone), is returned as it is.
 */
export function asOutputError(e: unknown, dir: string, doing: string, workDir?: string): unknown {
  if (isSnapError(e) && e.kind !== 'internal' && e.kind !== 'stepFailed') return e
  const full = noSpaceCode(e)
  if (full) {
    // A write elsewhere (the journal, a kept log) is named by its own directory, not blamed on the output's.
    const written = pathOf(e)
    const where = written && !inside(dir, written) ? dirname(written) : dir
    const what = full === 'EDQUOT' ? 'disk quota exceeded' : 'no space left'
    return new OutputPathError(
      `${what} while ${doing} in ${where}, on the filesystem mounted at ${filesystemNear(where)}`,
      full === 'EDQUOT' ? 'free space within the quota or give --output on another filesystem' : 'free space there or give --output on another filesystem',
    )
  }
  if (!existsSync(dir))
    return new OutputPathError(
      `output directory ${dir} was removed while ${doing} (it was on the filesystem mounted at ${filesystemNear(dir)})`,
      'nothing of the capture is left; create it again or choose another --output, and dump again',
    )
  if (workDir !== undefined && !existsSync(workDir))
    return new OutputPathError(
      `the work directory ${workDir} was removed while ${doing}, from ${dir} on the filesystem mounted at ${filesystemOf(dir)}`,
      'something cleans that directory: give --output one nothing else cleans, and dump again',
    )
  return e
}

/**
 * Names of the temporaries snap keeps beside the output while it works: hidden, and carrying snap's pid, so that
 * `snap recover` finds them by name even when snap died before it could journal them.
 */
export function partialPrefix(output: string, snapPid: number): string {
  return `.${basename(output)}.partial-${snapPid}-`
}

export function workDirPrefix(output: string, snapPid: number): string {
  return `.${basename(output)}.work-${snapPid}-`
}

export { humanBytes }
