// pstree.img, the process tree criu dumped: what the manifest records is what was dumped, not what snap saw before
// the stop. Read without crit (a Python start per image), so it costs nothing in the freeze.

import { join } from 'node:path'
import { readBoundedRegularFile } from '../bundle/bounded-read.js'
import { CoreBuildError } from '../corefile/errors.js'
import { ImageFormatError } from './errors.js'
import { CORE_MAGIC, imageEntries, parsing, PSTREE_MAGIC } from './image-file.js'
import { CORE_ENTRY, PSTREE_ENTRY, TASK_CORE_ENTRY } from './proto.js'
import { decodeMessage, messageField, uintField, uintsField } from './wire.js'

export interface DumpedTask {
  pid: number
  ppid: number
  pgid: number
  sid: number
  /** Thread ids as criu recorded them (the main thread first, as criu writes it). For a zombie criu writes one
   *  entry it never filled in (0 or whatever its memory held): read `exited` before trusting these. */
  threads: number[]
  /** A zombie when dumped (core-PID.img task_state TASK_DEAD): it had exited and its parent had not reaped it. criu
   *  makes it again at the restore as a zombie that exits with its recorded status. Set by markExited. */
  exited?: boolean
}

/** A bounded image: criu writes a few dozen bytes per task, so 16 MiB is a tree of hundreds of thousands. */
const MAX_PSTREE_BYTES = 16 << 20

export function parsePstreeEntry(msg: Buffer): DumpedTask {
  const f = decodeMessage(msg)
  const one = (n: number) => uintField(f, n) ?? 0
  const task: DumpedTask = {
    pid: one(PSTREE_ENTRY.pid), ppid: one(PSTREE_ENTRY.ppid), pgid: one(PSTREE_ENTRY.pgid), sid: one(PSTREE_ENTRY.sid),
    threads: uintsField(f, PSTREE_ENTRY.threads),
  }
  if (task.pid <= 0) throw new ImageFormatError('a pstree.img entry has no pid')
  if (task.threads.length === 0) task.threads = [task.pid]
  return task
}

export function parsePstreeImage(buf: Buffer): DumpedTask[] {
  if (buf.length < 8) throw new ImageFormatError('pstree.img is too short')
  const tasks = imageEntries(buf, PSTREE_MAGIC, 'pstree.img').map(parsePstreeEntry)
  if (tasks.length === 0) throw new ImageFormatError('pstree.img holds no task')
  return tasks
}

/** criu's TASK_DEAD (compel's COMPEL_TASK_DEAD): the task_state of a zombie's core image. */
const TASK_DEAD = 2

/** A bounded core image: a zombie's is a few dozen bytes, a live process's a few KiB. */
const MAX_CORE_BYTES = 64 << 20

/**
 * Marks the zombies of a dumped tree from each process's core-PID.img (core_entry.tc.task_state) and drops the
 * thread id criu wrote for them, which means nothing: a zombie has no thread left to list.
 */
export function markExited(imagesDir: string, tasks: DumpedTask[]): DumpedTask[] {
  for (const task of tasks) {
    const name = `core-${task.pid}.img`
    const entry = imageEntries(readBoundedRegularFile(join(imagesDir, name), MAX_CORE_BYTES), CORE_MAGIC, name)[0]
    if (!entry) throw new ImageFormatError(`${name} holds no entry`)
    const tc = messageField(decodeMessage(entry), CORE_ENTRY.tc)
    if (tc && uintField(tc, TASK_CORE_ENTRY.task_state) === TASK_DEAD) {
      task.exited = true
      task.threads = []
    }
  }
  return tasks
}

export function readPstreeImage(file: string): DumpedTask[] {
  return parsePstreeImage(readBoundedRegularFile(file, MAX_PSTREE_BYTES))
}

/** Every pid and thread id of the tree in an images directory's pstree.img; none when it cannot be read (a restore
 *  cleaning up needs what there is, not an error). */
export function pstreeIds(imagesDir: string): number[] {
  try {
    return [...new Set(readPstreeImage(join(imagesDir, 'pstree.img')).flatMap((t) => [t.pid, ...t.threads]))]
  } catch {
    return []
  }
}

/** One process of the tree as its core describes it. */
export interface TaskTree {
  pid: number
  ppid: number
  pgid: number
  sid: number
  /** Thread ids, the main thread (= pid) first. */
  threads: number[]
}

export function taskFromPstree(image: Buffer, pid: number): TaskTree {
  const tasks = parsing('pstree.img', () => parsePstreeImage(image))
  const entry = tasks.find((t) => t.pid === pid)
  if (!entry) throw new CoreBuildError(`pid ${pid} is not in pstree.img (it holds ${tasks.map((t) => t.pid).join(', ')})`)
  // gdb makes the first NT_PRSTATUS its current thread: the main thread goes first, as in a kernel core.
  const threads = [pid, ...entry.threads.filter((tid) => tid !== pid)]
  return { pid, ppid: entry.ppid, pgid: entry.pgid, sid: entry.sid, threads }
}
