// Verifies and extracts a bundle in one streaming pass into a private work directory. Every byte is hashed on the
// way; if anything fails, the directory is removed and nothing extracted is used. Only the entries asked for are
// written, only once the filesystem was seen to have room for what the manifest declares of them, and never more
// of an entry than the manifest declares: a 153 KB bundle declaring a 4 GiB image filled a 200 MB TMPDIR before.

import { constants, mkdirSync, openSync, statfsSync } from 'node:fs'
import { dirname, relative, resolve } from 'node:path'
import { BundleInvalidError } from '../errors.js'
import { bytesText } from './entry-bounds.js'
import { filesystemOf } from './output-path.js'
import { EntryWriteError, scanBundle, type EntryVisitor, type ScanResult } from './reader.js'
import type { ArtifactRecord, Manifest } from './manifest.js'

export interface ExtractOptions {
  bundle: string
  /** An existing, private (0700), empty directory. */
  into: string
  /** Which artifacts to write out; the others are still hashed. Asked of every artifact of the manifest once the head
   *  is read (after onHead), for the room check, then of each as it comes. */
  want: (a: ArtifactRecord) => boolean
  /** What to say to do when there is no room (the hint of the refusal). */
  roomHint?: string
  /** Decides on the head (manifest, signature) before anything is written; throwing stops the extraction. */
  onHead?: EntryVisitor['onHead']
  onRead?: EntryVisitor['onRead']
}

function insideDir(root: string, name: string): string {
  const target = resolve(root, name)
  const rel = relative(root, target)
  // Belt and braces: names were already checked, but the path we open must resolve under root.
  if (rel.startsWith('..') || rel === '' || resolve(root, rel) !== target) throw new BundleInvalidError(`entry '${name}' would land outside the work directory`, [name])
  return target
}

/** What to do when what a command needs written does not fit in its work directory under TMPDIR. */
export const TMPDIR_HINT = 'free space there, or set TMPDIR to a filesystem with room'

/** A file takes whole blocks, and a directory entry and an inode besides: counted as one more block each. */
const BLOCK = 4096
/** Left free besides: what the command writes next to them (a log, gdb's script) and the filesystem's own needs. */
const SPARE = 1 << 20

/**
 * Refuses, naming the largest, entries that do not fit in `root` as the manifest declares them: checked before the
 * first byte is written, against statfs of the filesystem (blocks and inodes).
 */
export function checkRoom(bundle: string, root: string, entries: Pick<ArtifactRecord, 'path' | 'size'>[], hint: string, declared = 'is declared'): void {
  if (entries.length === 0) return
  const need = entries.reduce((n, a) => n + Math.ceil(a.size / BLOCK) * BLOCK + BLOCK, SPARE)
  const st = statfsSync(root)
  const free = Number(st.bavail) * Number(st.bsize)
  // A filesystem without an inode count (tmpfs without nr_inodes, btrfs) reports 0 files.
  const freeFiles = Number(st.files) > 0 ? Number(st.ffree) : Infinity
  if (need <= free && entries.length + 16 <= freeFiles) return
  const largest = entries.reduce((a, b) => (b.size > a.size ? b : a))
  const what = `${largest.path} ${declared} ${bytesText(largest.size)}${entries.length === 1 ? '' : `, the ${entries.length} entries needed ${bytesText(need)} in all`}`
  const room = need > free ? `${bytesText(free)} free` : `${freeFiles} inodes free`
  throw new BundleInvalidError(`${bundle}: ${what}, and ${root} (filesystem ${filesystemOf(root)}) has ${room}; nothing was written there`, [largest.path], hint)
}

export async function verifyAndExtract(o: ExtractOptions): Promise<ScanResult> {
  const root = resolve(o.into)
  return scanBundle(o.bundle, {
    onHead: (head: { manifest: Manifest; manifestBytes: Buffer; signature?: Buffer }) => {
      o.onHead?.(head)
      checkRoom(o.bundle, root, head.manifest.artifacts.filter((a) => o.want(a)), o.roomHint ?? 'free space there, or use a directory on a filesystem with room')
    },
    onRead: o.onRead,
    // The reader never lets an entry be more than its manifest record declares (the room checked above); it writes
    // what it hashes, a large entry on its hashing thread.
    writeTo(record) {
      if (!o.want(record)) return undefined
      const path = insideDir(root, record.path)
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
      // O_EXCL and O_NOFOLLOW: never write through a link, never write a file twice.
      return openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
    },
  }).catch((e: unknown) => {
    // The pass stopped for the write that failed: that is the error to tell.
    throw e instanceof EntryWriteError ? extractError(root, e.cause, e.entry) : e
  })
}

function extractError(root: string, e: Error, entry: string): Error {
  if (e instanceof BundleInvalidError) return e
  const code = (e as NodeJS.ErrnoException).code
  return new BundleInvalidError(
    `cannot extract ${entry ? `'${entry}' ` : ''}into ${root}: ${code ?? e.message}`,
    entry ? [entry] : [],
    code === 'ENOSPC' ? 'free space or give --work-dir elsewhere' : undefined,
  )
}
