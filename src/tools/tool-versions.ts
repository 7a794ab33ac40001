// What a tool's `--version` printed, remembered beside the passed `criu check` (criu.ts) for the same binary on the
// same boot: gdb takes 45-70 ms here to start and say its version, the longest of the probes every dump's preflight
// waits for. Keyed by the file (path, size, inode, modification and change time), so a binary replaced or changed in
// place is asked again, and by the boot; at most a day old. A failed answer is never remembered, and `snap doctor`
// always asks. The file is read and written as the criu check's is (cache-file.ts).

import { readFileSync, statSync } from 'node:fs'
import { readCacheJson, writeCacheJson } from './cache-file.js'
import { queryTool } from './run.js'

export const VERSIONS_FILE = 'tool-versions.json'
const FORMAT = 'procsnap-tool-versions/1'
/** A file larger than this is not one snap wrote: it is not read. */
const MAX_BYTES = 16 << 10
/** Tools remembered at most (criu and gdb, and those given with --criu and --gdb). */
const MAX_ENTRIES = 16
export const VERSION_REMEMBERED_MS = 24 * 60 * 60 * 1000
/** An answer longer than this is not a version: not remembered. */
const MAX_OUTPUT = 2048

interface Entry {
  path: string
  key: string
  output: string
  askedAt: string
}

/** The file as it is now, and the boot: undefined when either cannot be read (then nothing is remembered). */
function keyOf(path: string): string | undefined {
  try {
    const st = statSync(path, { bigint: true })
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    if (!boot || !st.isFile()) return undefined
    return JSON.stringify([path, String(st.size), String(st.ino), String(st.dev), String(st.mtimeNs), String(st.ctimeNs), boot])
  } catch {
    return undefined
  }
}

/** The remembered entries; none when the file is missing, untrusted (cache-file.ts) or not snap's. */
function readEntries(dir: string): Entry[] {
  const doc = readCacheJson(dir, VERSIONS_FILE, MAX_BYTES) as { format?: unknown; entries?: unknown } | undefined
  if (doc?.format !== FORMAT || !Array.isArray(doc.entries)) return []
  return (doc.entries as Entry[]).filter((e) => typeof e?.path === 'string' && typeof e.key === 'string' && typeof e.output === 'string' && typeof e.askedAt === 'string')
}

/**
 * `path --version`'s answer (as queryTool gives it), from `cacheDir` when this binary's was remembered there on this
 * boot less than a day ago; otherwise asked, and remembered when it succeeded and the binary did not change meanwhile.
 */
export async function versionAnswer(path: string, cacheDir: string | null, now = Date.now()): Promise<{ ok: boolean; output: string }> {
  const key = cacheDir === null ? undefined : keyOf(path)
  if (key) {
    const hit = readEntries(cacheDir!).find((e) => e.key === key)
    const at = hit ? Date.parse(hit.askedAt) : NaN
    if (hit && at <= now && now - at < VERSION_REMEMBERED_MS) return { ok: true, output: hit.output }
  }
  const r = await queryTool(path, ['--version'])
  if (key && r.ok && r.output.length <= MAX_OUTPUT && keyOf(path) === key) {
    const others = readEntries(cacheDir!).filter((e) => e.path !== path)
    writeCacheJson(cacheDir!, VERSIONS_FILE, { format: FORMAT, entries: [...others.slice(-(MAX_ENTRIES - 1)), { path, key, output: r.output, askedAt: new Date(now).toISOString() }] })
  }
  return r
}
