// Verifies and extracts a bundle in one streaming pass into a private work directory. Every byte is hashed on the
// way; if anything fails, the directory is removed and nothing extracted is used.

import { closeSync, constants, mkdirSync, openSync, writeSync } from 'node:fs'
import { dirname, relative, resolve } from 'node:path'
import { BundleInvalidError } from '../errors.js'
import { scanBundle, type EntryVisitor, type ScanResult } from './reader.js'
import type { ArtifactRecord } from './manifest.js'

export interface ExtractOptions {
  bundle: string
  /** An existing, private (0700), empty directory. */
  into: string
  /** Which artifacts to write out; the others are still hashed. */
  want: (a: ArtifactRecord) => boolean
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

export async function verifyAndExtract(o: ExtractOptions): Promise<ScanResult> {
  const root = resolve(o.into)
  let writeError: Error | undefined
  const result = await scanBundle(o.bundle, {
    onHead: o.onHead,
    onRead: o.onRead,
    onArtifact(entry, record) {
      if (!o.want(record)) return
      let fd: number | undefined
      try {
        const path = insideDir(root, record.path)
        mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
        // O_EXCL and O_NOFOLLOW: never write through a link, never write a file twice.
        fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
      } catch (e) {
        writeError ??= e as Error
        return
      }
      const out = fd
      entry.on('data', (chunk: Buffer) => {
        if (writeError) return
        try {
          let off = 0
          while (off < chunk.length) off += writeSync(out, chunk, off)
        } catch (e) {
          writeError = e as Error
        }
      })
      entry.on('end', () => closeSync(out))
    },
  })
  if (writeError) {
    if (writeError instanceof BundleInvalidError) throw writeError
    const code = (writeError as NodeJS.ErrnoException).code
    throw new BundleInvalidError(`cannot extract into ${root}: ${code ?? writeError.message}`, [], code === 'ENOSPC' ? 'free space or give --work-dir elsewhere' : undefined)
  }
  return result
}
