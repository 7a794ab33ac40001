// Who a bundle's images would bring back, read from the images themselves (not from the manifest, which is what a
// hostile or mistaken bundle lies in): the tree (pstree.img), the root's credentials (core-PID.img) and its
// executable (mm-PID.img -> files.img). Read with a small protobuf reader, bounded, without crit.

import { join } from 'node:path'
import { BoundedReadError, readBoundedRegularFile } from '../bundle/bounded-read.js'
import { CORE_MAGIC, decodeMessage, FILES_MAGIC, ImageFormatError, imageEntries, MM_MAGIC, type Field } from './criu-image-format.js'
import { readPstreeImage, type DumpedTask } from './criu-pstree.js'

/** core, mm and files images of a real process are KiB to a few MiB: more is not an image snap will parse. */
const MAX_IMAGE_BYTES = 64 << 20

const readBounded = (file: string): Buffer => readBoundedRegularFile(file, MAX_IMAGE_BYTES)

const num = (f: Map<number, Field[]>, n: number): number | undefined => {
  const v = f.get(n)?.[0]
  return typeof v === 'number' ? v : undefined
}
const msgOf = (f: Map<number, Field[]>, n: number): Map<number, Field[]> | undefined => {
  const v = f.get(n)?.[0]
  return Buffer.isBuffer(v) ? decodeMessage(v) : undefined
}
const str = (f: Map<number, Field[]>, n: number): string | undefined => {
  const v = f.get(n)?.[0]
  return Buffer.isBuffer(v) ? v.toString('utf8') : undefined
}

export interface ImageCreds {
  uid: number
  gid: number
  euid: number
  egid: number
  suid: number
  sgid: number
}

export interface ImageIdentity {
  tree: DumpedTask[]
  /** The root's credentials as criu will give them back (core_entry.thread_core.creds). */
  creds: ImageCreds
  comm: string | undefined
  /** The root's executable as criu recorded it (mm exe_file_id -> files.img reg name). */
  exe: string | undefined
  /** Every regular file of the tree criu recorded with its size at the freeze (files.img reg entries). */
  files: { path: string; size: number }[]
}

/** images/core.proto: core_entry { tc = 3 { comm = 6 }, thread_core = 5 { creds = 10 { uid 1 .. sgid 6 } } }. */
export function credsFromCore(entry: Buffer): { creds: ImageCreds; comm: string | undefined } {
  const core = decodeMessage(entry)
  const creds = msgOf(msgOf(core, 5) ?? new Map(), 10)
  if (!creds) throw new ImageFormatError('the core image holds no credentials')
  const field = (n: number) => {
    const v = num(creds, n)
    if (v === undefined) throw new ImageFormatError(`the core image's credentials lack field ${n}`)
    return v
  }
  return {
    creds: { uid: field(1), gid: field(2), euid: field(3), egid: field(4), suid: field(5), sgid: field(6) },
    comm: str(msgOf(core, 3) ?? new Map(), 6),
  }
}

/** Each regular file's name by its file id (images/fdinfo.proto file_entry { id = 2, reg = 3 { name = 6 } }): what a
 *  VMA's shmid or mm's exe_file_id names. */
export function regularFileNames(files: Buffer[]): Map<number, string> {
  const out = new Map<number, string>()
  for (const f of files) {
    const entry = decodeMessage(f)
    const id = num(entry, 2)
    const reg = msgOf(entry, 3)
    const name = reg ? str(reg, 6) : undefined
    if (id !== undefined && name !== undefined && !out.has(id)) out.set(id, name)
  }
  return out
}

/** images/mm.proto exe_file_id = 12, named through files.img. */
export function exeFromImages(mm: Buffer, files: Buffer[]): string | undefined {
  const exeId = num(decodeMessage(mm), 12)
  return exeId === undefined ? undefined : regularFileNames(files).get(exeId)
}

/** Regular files with the size criu saw at the freeze: criu refuses a restore where one has another size. */
export function regularFiles(files: Buffer[]): { path: string; size: number }[] {
  const out: { path: string; size: number }[] = []
  for (const f of files) {
    const entry = decodeMessage(f)
    const reg = msgOf(entry, 3)
    if (!reg) continue
    const path = str(reg, 6)
    const size = num(reg, 8)
    if (path !== undefined && size !== undefined) out.push({ path: path.startsWith('/') ? path : `/${path}`, size })
  }
  return out
}

export function readImageIdentity(imagesDir: string): ImageIdentity {
  const tree = readPstreeImage(join(imagesDir, 'pstree.img'))
  const root = tree[0]!.pid
  const core = imageEntries(readBounded(join(imagesDir, `core-${root}.img`)), CORE_MAGIC, `core-${root}.img`)[0]
  if (!core) throw new ImageFormatError(`core-${root}.img holds no entry`)
  const { creds, comm } = credsFromCore(core)
  let exe: string | undefined
  let regular: { path: string; size: number }[] = []
  try {
    const files = imageEntries(readBounded(join(imagesDir, 'files.img')), FILES_MAGIC, 'files.img')
    regular = regularFiles(files)
    const mm = imageEntries(readBounded(join(imagesDir, `mm-${root}.img`)), MM_MAGIC, `mm-${root}.img`)[0]
    exe = mm ? exeFromImages(mm, files) : undefined
  } catch (e) {
    if (!(e instanceof ImageFormatError) && !(e instanceof BoundedReadError) && (e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
  }
  return { tree, creds, comm, exe, files: regular }
}

/** The executable of one process of the images' tree as criu recorded it, or undefined when the images do not say. */
export function exeOfProcess(imagesDir: string, pid: number): string | undefined {
  try {
    const files = imageEntries(readBounded(join(imagesDir, 'files.img')), FILES_MAGIC, 'files.img')
    const mm = imageEntries(readBounded(join(imagesDir, `mm-${pid}.img`)), MM_MAGIC, `mm-${pid}.img`)[0]
    return mm ? exeFromImages(mm, files) : undefined
  } catch (e) {
    if (e instanceof ImageFormatError || e instanceof BoundedReadError || (e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw e
  }
}
