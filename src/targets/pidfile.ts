// --pidfile FILE: the pid a daemon wrote. Read bounded (a pidfile is a line; a huge or endless file is refused), and
// believed only while the process it names started before the file was last written: after a crash the pid may have
// been handed to another process, and that one must never be stopped in its place.

import { closeSync, fstatSync, openSync, readSync, constants } from 'node:fs'
import { NoSuchTargetError, TargetChangedError, UsageError } from '../errors.js'
import type { ResolvedTarget } from './naming.js'

/** More than any pidfile holds ("4242\n"), few enough to read at once. */
export const PIDFILE_MAX_BYTES = 4096

/** A start time from /proc (field 22, clock ticks after boot) is known to 10 ms, and the boot time it is added to
 *  comes from two clocks read one after the other: allowed before a started-after-the-file refusal. */
export const START_SLACK_MS = 1000

export interface PidfileContent {
  pid: number
  /** When the file was last written, in ms since the epoch. */
  mtimeMs: number
}

/** The pid in the text: its first line, digits only (whitespace around them allowed). */
export function parsePidfile(text: string, path: string): number {
  const first = text.split('\n')[0]!.trim()
  if (!/^\d{1,10}$/.test(first)) throw new UsageError(`${path} does not hold a pid (its first line is '${first.slice(0, 40)}')`, 'give the file the service writes its pid to')
  const pid = Number(first)
  if (pid <= 0 || pid > 4194304) throw new UsageError(`${path} holds ${pid}, which is no pid`, 'give the file the service writes its pid to')
  return pid
}

/** Reads at most PIDFILE_MAX_BYTES of a regular file (no FIFO is waited on: O_NONBLOCK, and the type is checked on the
 *  descriptor before reading). */
export function readPidfile(path: string): PidfileContent {
  let fd: number
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new NoSuchTargetError(`the pidfile ${path} does not exist`, 'is the service running? check the path in its configuration')
    throw new UsageError(`cannot read the pidfile ${path}: ${code ?? (e as Error).message}`)
  }
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) throw new UsageError(`the pidfile ${path} is not a regular file`, 'give the file the service writes its pid to')
    if (st.size > PIDFILE_MAX_BYTES) throw new UsageError(`the pidfile ${path} holds ${st.size} bytes, more than a pidfile does (${PIDFILE_MAX_BYTES})`, 'give the file the service writes its pid to')
    const buf = Buffer.alloc(PIDFILE_MAX_BYTES)
    const n = readSync(fd, buf, 0, PIDFILE_MAX_BYTES, 0)
    return { pid: parsePidfile(buf.subarray(0, n).toString('utf8'), path), mtimeMs: st.mtimeMs }
  } finally {
    closeSync(fd)
  }
}

/**
 * Whether the pidfile can name the process: the process must be alive (startedMs known) and must not have started
 * after the file was written. Pure: the caller reads both times.
 */
export function checkPidfile(path: string, content: PidfileContent, startedMs: number | undefined): ResolvedTarget {
  const { pid, mtimeMs } = content
  if (startedMs === undefined) throw new NoSuchTargetError(`the pidfile ${path} names pid ${pid}, which is not running`, 'the service has exited: a stale pidfile')
  if (startedMs > mtimeMs + START_SLACK_MS)
    throw new TargetChangedError(
      `the pidfile ${path} names pid ${pid}, but that process started ${new Date(startedMs).toISOString()}, after the file was written (${new Date(mtimeMs).toISOString()}): the pid now belongs to another process`,
      'the service has exited and its pidfile is stale; nothing was sent',
    )
  return { pid, naming: { by: 'pidfile', value: path, via: `pid ${pid} in the file`, pid } }
}
