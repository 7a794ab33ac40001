// Who a bundle's images would bring back, read from the images themselves (not from the manifest, which is what a
// hostile or mistaken bundle lies in): the tree (pstree.img), every thread's credentials (core-TID.img) and the
// executables (mm-PID.img -> files.img). Read with snap's own protobuf reader, bounded, without crit.

import { readFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { BoundedReadError, readBoundedRegularFile } from '../bundle/bounded-read.js'
import { bytesText } from '../bundle/entry-bounds.js'
import { credsFromCore, threadCredsFromCore, type ImageCreds, type ThreadCreds } from './creds.js'
import { ImageFormatError, ImageLimitError } from './errors.js'
import { filesFromImage, regularFilePaths, type FilesImage } from './files.js'
import { remappedFileIds } from './ghost-files.js'
import { CORE_MAGIC, imageEntries, MAX_IMAGE_BYTES } from './image-file.js'
import { mmExeFileId, mmSummary } from './mm.js'
import { readPstreeImage, type DumpedTask } from './pstree.js'

// What a restore compares the identity's credentials with, field by field.
export { THREAD_CRED_FIELDS, type ImageCreds, type ThreadCreds } from './creds.js'

// Every image is read before criu runs, from a bundle that may be hostile: each is bounded in size here (the
// extraction already held it to the size its manifest declares), and walked for what the identity needs, never
// decoded whole. Decoded whole, an mm image of 400,000 mappings or a files.img of as many files cost GBs.

/** A core image is a task's registers, signals and credentials: KiB, and at most NGROUPS_MAX (65536) groups of up
 *  to 5 bytes each. */
const MAX_CORE_BYTES = 1 << 20
/** mm-PID.img: ~40 bytes a mapping, a million mappings. */
const MAX_MM_BYTES = 64 << 20
/** files.img: every file of the tree, each path kept for the size check; ~16 MiB is 200,000 files of long paths. */
const MAX_FILES_BYTES = 16 << 20

function readBounded(file: string, maxBytes: number): Buffer {
  try {
    return readBoundedRegularFile(file, maxBytes)
  } catch (e) {
    if (e instanceof BoundedReadError && /more than the/.test(e.message))
      throw new ImageLimitError(`${basename(file)} is larger than the ${bytesText(maxBytes)} snap reads of such an image`)
    throw e
  }
}

/** How many mappings this host lets a process have: criu cannot restore one with more. */
function maxMapCount(): number {
  try {
    const n = Number(readFileSync('/proc/sys/vm/max_map_count', 'utf8').trim())
    return Number.isSafeInteger(n) && n > 0 ? n : 65530
  } catch {
    return 65530
  }
}

export interface ImageThread {
  /** The process (thread group) as the images name it. */
  pid: number
  tid: number
  /** null for a zombie: criu writes it no thread_core, and makes it again by exiting, with no credentials to give. */
  creds: ThreadCreds | null
}

export interface ImageIdentity {
  tree: DumpedTask[]
  /** Every thread of every process with the credentials criu would give it. */
  threads: ImageThread[]
  /** The root's credentials as criu will give them back (core_entry.thread_core.creds). */
  creds: ImageCreds
  comm: string | undefined
  /** The root's executable as criu recorded it (mm exe_file_id -> files.img reg name). */
  exe: string | undefined
  /** Every regular file of the tree criu recorded with its size at the freeze (files.img reg entries). */
  files: { path: string; size: number }[]
}

/** The first entry of a core image, bounded. */
function coreEntry(imagesDir: string, tid: number): Buffer {
  const name = `core-${tid}.img`
  const entry = imageEntries(readBounded(join(imagesDir, name), MAX_CORE_BYTES), CORE_MAGIC, name)[0]
  if (!entry) throw new ImageFormatError(`${name} holds no entry`)
  return entry
}

/**
 * Every thread of the tree with its credentials, each from its own core-TID.img. A zombie's core-PID.img has no
 * thread_core (criu writes it none) and its thread list means nothing: it gets no entry.
 */
export function readThreadCreds(imagesDir: string, tree: DumpedTask[]): ImageThread[] {
  const out: ImageThread[] = []
  // Threads share their groups: one list kept for all, not one a thread (65536 groups are 512 KiB held).
  const groupLists = new Map<string, number[]>()
  const credsOf = (tid: number): ThreadCreds | null => {
    try {
      const creds = threadCredsFromCore(coreEntry(imagesDir, tid))
      if (!creds) return creds
      const key = creds.groups.join(',')
      const known = groupLists.get(key)
      if (known) creds.groups = known
      else groupLists.set(key, creds.groups)
      return creds
    } catch (e) {
      if (e instanceof ImageFormatError) throw new ImageFormatError(`core-${tid}.img: ${e.message}`)
      if (e instanceof ImageLimitError && !e.message.startsWith('core-')) throw new ImageLimitError(`core-${tid}.img: ${e.message}`)
      throw e
    }
  }
  for (const task of tree) {
    const main = credsOf(task.pid)
    if (main === null) continue
    for (const tid of task.threads) out.push({ pid: task.pid, tid, creds: tid === task.pid ? main : credsOf(tid) })
  }
  return out
}

/** The executable criu recorded for a process: mm's exe_file_id, named through files.img; its mappings counted,
 *  not decoded, and held to what this host lets a process have. */
function exeFromImages(imagesDir: string, files: FilesImage | undefined, pid: number): string | undefined {
  const name = `mm-${pid}.img`
  const { vmas, exeFileId } = mmSummary(readBounded(join(imagesDir, name), MAX_MM_BYTES), pid)
  const most = maxMapCount()
  if (vmas > most) throw new ImageLimitError(`${name} lists ${vmas} mappings, more than the ${most} this host lets a process have (vm.max_map_count)`)
  return exeFileId === undefined ? undefined : files?.regular.get(exeFileId)?.path
}

/** Regular files with the size criu saw at the freeze: criu refuses a restore where one has another size. Each
 *  path once: files.img has an entry a file, and a file opened many times is checked once. */
function regularFiles(files: FilesImage, remapped: Set<number>): { path: string; size: number }[] {
  const out = new Map<string, { path: string; size: number }>()
  for (const [id, { path, size }] of files.regular) {
    // Deleted while open: criu brings it back from its own images, whatever now has that path.
    if (remapped.has(id)) continue
    const abs = path.startsWith('/') ? path : `/${path}`
    if (size !== undefined) out.set(`${size} ${abs}`, { path: abs, size })
  }
  return [...out.values()]
}

/** Format problems leave the executable unknown (the manifest's word is then checked without it); limits refuse. */
const unreadable = (e: unknown): boolean =>
  e instanceof ImageFormatError || e instanceof BoundedReadError || (e as NodeJS.ErrnoException).code === 'ENOENT'

function readFiles(imagesDir: string): FilesImage | undefined {
  try {
    return filesFromImage(readBounded(join(imagesDir, 'files.img'), MAX_FILES_BYTES))
  } catch (e) {
    if (unreadable(e)) return undefined
    throw e
  }
}

export function readImageIdentity(imagesDir: string): ImageIdentity {
  const tree = readPstreeImage(join(imagesDir, 'pstree.img'))
  const root = tree[0]!.pid
  const { creds, comm } = credsFromCore(coreEntry(imagesDir, root))
  const files = readFiles(imagesDir)
  let exe: string | undefined
  // Every process's mappings are counted, the root's executable named: criu would map them all.
  for (const task of tree) {
    try {
      const named = exeFromImages(imagesDir, files, task.pid)
      if (task.pid === root) exe = named
    } catch (e) {
      if (!unreadable(e)) throw e
    }
  }
  return { tree, threads: readThreadCreds(imagesDir, tree), creds, comm, exe, files: files ? regularFiles(files, remappedFileIds(imagesDir)) : [] }
}

/** The executable of one process of the images' tree as criu recorded it, or undefined when the images do not say. */
export function exeOfProcess(imagesDir: string, pid: number): string | undefined {
  try {
    return exeFromImages(imagesDir, readFiles(imagesDir), pid)
  } catch (e) {
    if (unreadable(e) || e instanceof ImageLimitError) return undefined
    throw e
  }
}

/** The executable criu recorded for a process (mm's exe_file_id, named through files.img), read without decoding a
 *  mapping or a file more than it takes, and without counting the mappings against this host; undefined when the
 *  images do not say, or cannot be read. */
export function exeOfImages(imagesDir: string, pid: number): string | undefined {
  try {
    const exeId = mmExeFileId(readBoundedRegularFile(join(imagesDir, `mm-${pid}.img`), MAX_IMAGE_BYTES), pid)
    if (exeId === undefined) return undefined
    return regularFilePaths(readBoundedRegularFile(join(imagesDir, 'files.img'), MAX_IMAGE_BYTES), new Set([exeId])).get(exeId)
  } catch (e) {
    if (unreadable(e)) return undefined
    throw e
  }
}
