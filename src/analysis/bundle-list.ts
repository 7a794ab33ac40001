// `snap list [DIR...]`: the bundles in some directories, one line each, newest first. Only each file's head is read
// (the manifest is its first entry), so a directory of multi-GiB bundles lists in the time of a few small reads.
// What is not a bundle is left out, and counted. The head holds the signature too (right after the manifest), so each
// bundle's signature is checked against the trusted keys, loaded once for the whole list.

import { readdirSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { readManifest } from '../bundle/reader.js'
import { checkSignature, loadTrustedKeys, namedKey, type SignatureStatus } from '../bundle/trust.js'
import { OutputPathError } from '../errors.js'

export interface ListedBundle {
  path: string
  size: number
  createdAt: string
  host: string
  pid: number
  comm: string
  processes: number
  mode: string
  /** What checking the signature found; never the manifest's own word. */
  signature: SignatureStatus
}

export interface ListResult {
  bundles: ListedBundle[]
  /** Regular files that are not readable snap bundles, by reason (a file named like a bundle that is not one). */
  skipped: { path: string; why: string }[]
}

/** Files whose name says bundle: the default name (snap-COMM-PID-TIME.tar.zst, .tar.zst.age encrypted) and what -o
 *  users give. */
const BUNDLE_NAME = /\.(tar\.zst|tar\.gz|tar|snap)(\.age)?$/

/** `key`: check signatures against this public key alone; `warn` is told of each trusted-keys file that is ignored. */
export async function listBundles(dirs: string[], o: { key?: string; warn?: (line: string) => void } = {}): Promise<ListResult> {
  // Read once, before any bundle: a --key that is no key is one usage error, not a reason to skip every bundle.
  const key = o.key ? namedKey(o.key) : undefined
  const keys = key ? undefined : loadTrustedKeys()
  for (const k of keys?.ignored ?? []) o.warn?.(k.warning)
  const bundles: ListedBundle[] = []
  const skipped: ListResult['skipped'] = []
  for (const dir of dirs.length > 0 ? dirs : ['.']) {
    let names: string[]
    try {
      names = readdirSync(dir)
    } catch (e) {
      throw new OutputPathError(`cannot read directory ${resolve(dir)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'name a directory that holds bundles')
    }
    for (const name of names.sort()) {
      const path = join(dir, name)
      let size: number
      try {
        const st = statSync(path)
        if (!st.isFile()) continue
        size = st.size
      } catch {
        continue // gone meanwhile
      }
      try {
        const head = await readManifest(path)
        const { manifest } = head
        bundles.push({
          path,
          size,
          createdAt: manifest.createdAt,
          host: manifest.host.hostname,
          pid: manifest.target.pid,
          comm: manifest.target.comm,
          processes: manifest.processes?.length ?? 1,
          mode: manifest.mode,
          signature: checkSignature(head, { key, keys }),
        })
      } catch (e) {
        if (BUNDLE_NAME.test(name)) skipped.push({ path, why: (e as Error).message })
      }
    }
  }
  bundles.sort((a, b) => b.createdAt.localeCompare(a.createdAt))
  return { bundles, skipped }
}
