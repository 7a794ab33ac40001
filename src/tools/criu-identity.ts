// Who a bundle's images would bring back, read from the images themselves (not from the manifest, which is what a
// hostile or mistaken bundle lies in): the tree (pstree.img), the root's credentials (core-PID.img) and its
// executable (mm-PID.img -> files.img). Read with a small protobuf reader, bounded, without crit.

import { join } from 'node:path'
import { BoundedReadError, readBoundedRegularFile } from '../bundle/bounded-read.js'
import { filesFromImage, mmFromImage, type FilesImage } from '../corefile/images.js'
import { CORE_MAGIC, decodeMessage, ImageFormatError, imageEntries, messageField, textField, uintField } from './criu-image-format.js'
import { readPstreeImage, type DumpedTask } from './criu-pstree.js'

/** core, mm and files images of a real process are KiB to a few MiB: more is not an image snap will parse. */
const MAX_IMAGE_BYTES = 64 << 20

const readBounded = (file: string): Buffer => readBoundedRegularFile(file, MAX_IMAGE_BYTES)

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
  const creds = messageField(messageField(core, 5) ?? new Map(), 10)
  if (!creds) throw new ImageFormatError('the core image holds no credentials')
  const field = (n: number) => {
    const v = uintField(creds, n)
    if (v === undefined) throw new ImageFormatError(`the core image's credentials lack field ${n}`)
    return v
  }
  return {
    creds: { uid: field(1), gid: field(2), euid: field(3), egid: field(4), suid: field(5), sgid: field(6) },
    comm: textField(messageField(core, 3) ?? new Map(), 6),
  }
}

/** The executable criu recorded for a process: mm's exe_file_id, named through files.img. */
function exeFromImages(mm: Buffer, files: FilesImage, pid: number): string | undefined {
  const exeId = mmFromImage(mm, pid).exeFileId
  return exeId === undefined ? undefined : files.regular.get(exeId)?.path
}

/** Regular files with the size criu saw at the freeze: criu refuses a restore where one has another size. */
function regularFiles(files: FilesImage): { path: string; size: number }[] {
  const out: { path: string; size: number }[] = []
  for (const { path, size } of files.regular.values()) {
    if (size !== undefined) out.push({ path: path.startsWith('/') ? path : `/${path}`, size })
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
    const files = filesFromImage(readBounded(join(imagesDir, 'files.img')))
    regular = regularFiles(files)
    exe = exeFromImages(readBounded(join(imagesDir, `mm-${root}.img`)), files, root)
  } catch (e) {
    if (!(e instanceof ImageFormatError) && !(e instanceof BoundedReadError) && (e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
  }
  return { tree, creds, comm, exe, files: regular }
}

/** The executable of one process of the images' tree as criu recorded it, or undefined when the images do not say. */
export function exeOfProcess(imagesDir: string, pid: number): string | undefined {
  try {
    const files = filesFromImage(readBounded(join(imagesDir, 'files.img')))
    return exeFromImages(readBounded(join(imagesDir, `mm-${pid}.img`)), files, pid)
  } catch (e) {
    if (e instanceof ImageFormatError || e instanceof BoundedReadError || (e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw e
  }
}
