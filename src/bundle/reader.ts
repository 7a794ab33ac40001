// Reads bundles safely. A bundle is input from elsewhere: every entry is checked against strict rules and against
// the manifest before a byte of it is used, and reading streams, so memory does not grow with the bundle.

import { closeSync } from 'node:fs'
import { Parser, type ReadEntry } from 'tar'
import { reclaimEvery } from '../tools/reclaim.js'
import { BundleInvalidError } from '../errors.js'
import { openBundle, openTarStream } from './bundle-file.js'
import type { Compression } from './compression.js'
import { EntryHasher } from './entry-hash.js'
import { EntryBounds, entryError } from './entry-bounds.js'
import { TarEndGuard } from './tar-end.js'
import { MANIFEST_ENTRY, MANIFEST_FORMAT, MANIFEST_SCHEMA_VERSION, SIGNATURE_ENTRY, type ArtifactRecord, type Manifest } from './manifest.js'
import { validateManifest } from './schema.js'
import type { EncryptionFacts } from '../ship/decrypt.js'

/** A manifest larger than this is not one we wrote; refusing it bounds what a hostile first entry can cost. */
/** A real manifest is tens of KiB (a tree of hundreds of processes, thousands of images); a 16 MiB one cost 1.4 GB to
 *  parse and check. This bound keeps any bundle's head within a few hundred MiB of snap's memory. */
const MAX_MANIFEST_BYTES = 4 << 20
const MAX_SIGNATURE_BYTES = 4096

/** A safe entry name: relative, no "..", no empty or "." parts, a plain character set. */
export function entryNameProblem(name: string): string | undefined {
  if (name.startsWith('/')) return 'absolute path'
  const parts = name.split('/')
  if (parts.includes('..')) return "'..' component"
  if (parts.some((p) => p === '' || p === '.')) return 'empty or "." component'
  if (!/^[A-Za-z0-9._+@\/-]+$/.test(name)) return 'unexpected characters'
  return undefined
}

export interface ManifestRead {
  manifest: Manifest
  manifestBytes: Buffer
  compression: Compression
  /** An encrypted bundle: how (what its header says of its recipients). */
  encryption?: EncryptionFacts
}

function parseManifestBytes(path: string, bytes: Buffer): Manifest {
  let data: unknown
  try {
    data = JSON.parse(bytes.toString('utf8'))
  } catch {
    throw new BundleInvalidError(`${path}: ${MANIFEST_ENTRY} is not valid JSON`, [MANIFEST_ENTRY])
  }
  const d = data as Partial<Manifest>
  if (d?.format !== MANIFEST_FORMAT) throw new BundleInvalidError(`${path} is not a snap bundle (its manifest has no procsnap format mark)`, [MANIFEST_ENTRY])
  if (typeof d.schemaVersion !== 'number' || d.schemaVersion > MANIFEST_SCHEMA_VERSION || d.schemaVersion < 1)
    throw new BundleInvalidError(
      `${path} was written with manifest schema version ${String(d.schemaVersion)}; this snap reads up to ${MANIFEST_SCHEMA_VERSION}`,
      [MANIFEST_ENTRY],
      'use a newer snap to read it',
    )
  const problems = validateManifest(data)
  if (problems.length > 0)
    throw new BundleInvalidError(`${path}: ${MANIFEST_ENTRY} does not match its schema (${problems.slice(0, 3).join('; ')})`, [MANIFEST_ENTRY])
  return data as Manifest
}

export interface EntryVisitor {
  /**
   * Called for each artifact entry, in order, with its record; consume the stream synchronously via 'data'. `abort`
   * stops the whole pass with that error (a 'data' handler must not throw).
   */
  onArtifact?(entry: ReadEntry, record: ArtifactRecord, abort: (e: Error) => void): void
  /**
   * Where an artifact's bytes are to be written as the pass hashes them: a file opened for it, which the pass closes,
   * or undefined for none; a pass that writes hashes its large entries on a thread meanwhile (entry-hash.ts). Throwing
   * stops the pass with an EntryWriteError, as does a write that fails.
   */
  writeTo?(record: ArtifactRecord): number | undefined
  onSignature?(bytes: Buffer): void
  /**
   * Called once the head is read (the manifest, and the signature when there is one), before the first artifact: a
   * restore decides there whether to trust the bundle and whether this host can take it, before anything is written.
   * Throwing stops the pass with that error. The manifest's own bounds on its entries (entry-bounds.ts) are checked
   * first.
   */
  onHead?(head: { manifest: Manifest; manifestBytes: Buffer; signature?: Buffer }): void
  /** Stop after the head (the manifest, and the signature right after it): what inspect and list need, so their
   *  cost does not grow with the bundle. */
  manifestOnly?: boolean
  /** Told how many bytes of the bundle file have been read, of its size, as the pass goes (for progress). */
  onRead?(done: number, size: number): void
}

export interface ScanResult extends ManifestRead {
  signature?: Buffer
  /** Every problem found: a damaged or missing artifact, an extra entry. Empty when the bundle is intact. */
  problems: string[]
  /** sha256 and size actually read, per artifact path. */
  seen: Map<string, { sha256: string; size: number }>
}

class StopReading extends Error {}

/** Writing an artifact out (EntryVisitor.writeTo) failed: `cause` is the system's error. */
export class EntryWriteError extends Error {
  constructor(
    readonly entry: string,
    override readonly cause: Error,
  ) {
    super(`cannot write '${entry}': ${(cause as NodeJS.ErrnoException).code ?? cause.message}`)
  }
}

/**
 * One streaming pass over the bundle. Structural problems (unsafe names, links, devices, duplicates, an entry larger
 * than declared, more entries or bytes than the manifest declares) abort at once; content problems (a hash or size
 * mismatch, a missing artifact) are collected so verify can name every file that fails.
 */
export async function scanBundle(path: string, visitor: EntryVisitor = {}): Promise<ScanResult> {
  const { compression, size: fileSize, encrypted } = await openBundle(path)
  const parser = new Parser({ strict: true })
  let fatal: Error | undefined
  let manifest: Manifest | undefined
  let manifestBytes: Buffer | undefined
  let signature: Buffer | undefined
  let signatureBegun = false
  const problems: string[] = []
  // Hashing on a thread of its own only for a pass that also writes what it reads (an extraction).
  const hasher = new EntryHasher(visitor.writeTo !== undefined)
  const digests: Promise<void>[] = []
  /** Files written by the pass (writeTo), closed once their entry is through, or when the pass ends. */
  const openFiles = new Set<number>()
  const closeFile = (fd: number | undefined) => {
    if (fd === undefined || !openFiles.delete(fd)) return
    closeSync(fd)
  }
  const seen = new Map<string, { sha256: string; size: number }>()
  const names = new Set<string>()
  let index = 0
  let declared = new Map<string, ArtifactRecord>()
  let maxEntries = 2
  let maxBytes = MAX_MANIFEST_BYTES

  let totalBytes = 0
  let checked = 0
  const reclaimChecked = reclaimEvery(256 << 10)
  let headDone = false
  let bounds: EntryBounds | undefined
  /** The entry being read, for a stream that ends inside it. */
  let reading: { name: string; size: number; got: number } | undefined
  const head = (): boolean => {
    if (headDone || !manifest || !manifestBytes) return true
    headDone = true
    try {
      bounds = new EntryBounds(manifest)
      bounds.checkDeclared()
      visitor.onHead?.({ manifest, manifestBytes, signature })
      return true
    } catch (e) {
      fatal ??= e as Error
      parser.abort(fatal)
      return false
    }
  }
  const fail = (msg: string, entry?: string) => {
    fatal ??= new BundleInvalidError(`${path}: ${msg}`, entry ? [entry] : [])
    parser.abort(fatal)
  }

  parser.on('warn', (code: string, message: string | Error) => {
    fail(`damaged tar stream (${code}: ${message instanceof Error ? message.message : message})`)
  })
  parser.on('error', (e: Error) => {
    // A stream cut inside an entry (a header declaring 4 GiB in front of 64 KiB) names that entry.
    if (reading && reading.got < reading.size && /truncated/i.test(e.message))
      fatal ??= new BundleInvalidError(`${path}: entry '${reading.name}' is cut short: the bundle ends after ${reading.got} of its ${reading.size} bytes`, [reading.name])
    fatal ??= e instanceof BundleInvalidError ? e : new BundleInvalidError(`${path}: damaged tar stream (${e.message})`, [])
  })
  parser.on('entry', (entry: ReadEntry) => {
    if (fatal) return entry.resume()
    const name = entry.path
    const position = index++
    // The head is the manifest and, when signed, the signature right after it: read on to that, no further.
    if (visitor.manifestOnly && position > 0 && (position > 1 || name !== SIGNATURE_ENTRY)) {
      fatal = new StopReading()
      parser.abort(fatal)
      return entry.resume()
    }
    const problem = entryNameProblem(name)
    if (problem) return fail(`unsafe entry '${name}' (${problem}); nothing was extracted from it`, name)
    if (entry.type !== 'File' && entry.type !== 'OldFile')
      return fail(`entry '${name}' is a ${entry.type}, not a regular file; refusing`, name)
    const current = (reading = { name, size: entry.size, got: 0 })
    entry.on('data', (c: Buffer) => (current.got += c.length))
    if (names.has(name)) return fail(`entry '${name}' appears twice`, name)
    names.add(name)
    if (position >= maxEntries) return fail(`more entries than the manifest declares (entry '${name}' is number ${position + 1})`, name)
    if (position === 0 && entry.size > MAX_MANIFEST_BYTES)
      return fail(`${MANIFEST_ENTRY} is ${entry.size} bytes, too large for a real manifest (at most ${MAX_MANIFEST_BYTES})`, name)
    totalBytes += entry.size
    if (totalBytes > maxBytes) return fail(`more bytes than the manifest declares (at entry '${name}')`, name)

    if (position === 0) {
      if (name !== MANIFEST_ENTRY) return fail(`first entry is '${name}', not ${MANIFEST_ENTRY}: not a snap bundle`, name)
      if (entry.size > MAX_MANIFEST_BYTES) return fail(`${MANIFEST_ENTRY} is ${entry.size} bytes, too large`, name)
      const chunks: Buffer[] = []
      entry.on('data', (c: Buffer) => chunks.push(c))
      entry.on('end', () => {
        try {
          manifestBytes = Buffer.concat(chunks)
          manifest = parseManifestBytes(path, manifestBytes)
          declared = new Map(manifest.artifacts.map((a) => [a.path, a]))
          maxEntries = 2 + manifest.artifacts.length
          maxBytes = manifestBytes.length + MAX_SIGNATURE_BYTES + manifest.artifacts.reduce((s, a) => s + a.size, 0)
        } catch (e) {
          fatal ??= e as Error
          parser.abort(fatal)
        }
      })
      return
    }
    if (name === SIGNATURE_ENTRY) {
      // Anywhere else, the head would be judged unsigned while a full read found a signature: one place, one answer.
      if (position !== 1) return fail(`${SIGNATURE_ENTRY} is entry ${position + 1}; a signature must come right after ${MANIFEST_ENTRY}`, name)
      if (entry.size > MAX_SIGNATURE_BYTES) return fail(`${SIGNATURE_ENTRY} is too large`, name)
      signatureBegun = true
      const chunks: Buffer[] = []
      entry.on('data', (c: Buffer) => chunks.push(c))
      entry.on('end', () => {
        signature = Buffer.concat(chunks)
        visitor.onSignature?.(signature)
        if (visitor.manifestOnly) {
          fatal = new StopReading()
          parser.abort(fatal)
        }
      })
      return
    }
    if (!head()) return entry.resume()
    const record = declared.get(name)
    if (!record) return fail(`entry '${name}' is not listed in the manifest`, name)
    if (entry.size !== record.size) {
      // A size that differs from the manifest is content damage, but reading more than declared is refused outright.
      if (entry.size > record.size) return fail(`entry '${name}' is ${entry.size} bytes, larger than the ${record.size} the manifest declares`, name)
      problems.push(`${name}: size ${entry.size}, manifest says ${record.size}`)
    }
    let out: number | undefined
    try {
      out = visitor.writeTo?.(record)
    } catch (e) {
      fatal ??= new EntryWriteError(name, e as Error)
      parser.abort(fatal)
      return entry.resume()
    }
    if (out !== undefined) openFiles.add(out)
    const hash = hasher.forEntry(entry.size, out)
    let got = 0
    // Its JSON held to its shape as it streams by (stacks.json, a core's recipe): refused at the first byte that is
    // not, whatever the command.
    const checker = bounds!.checker(record)
    entry.on('data', (c: Buffer) => {
      hash.update(c)
      got += c.length
      if (!checker || fatal) return
      try {
        checker.write(c)
        // Its garbage freed as it goes: a JSON entry compresses well, so the reclaim by bytes of the file comes late.
        reclaimChecked((checked += c.length))
      } catch (e) {
        fatal ??= entryError(name, e)
        parser.abort(fatal)
      }
    })
    entry.on('end', () => {
      // Its place among the problems is kept while its digest comes (from the hashing thread, for a large entry).
      const slot = problems.push('') - 1
      const size = got
      const digest = hash.digest().then(
        (sha256) => {
          closeFile(out)
          seen.set(name, { sha256, size })
          if (sha256 !== record.sha256 && entry.size === record.size) problems[slot] = `${name}: sha256 mismatch (content changed)`
        },
        (e: Error) => {
          closeFile(out)
          fatal ??= out !== undefined ? new EntryWriteError(name, e) : e
          parser.abort(fatal)
          throw fatal
        },
      )
      // Awaited once the stream is through; a pass that stops before then drops it.
      digest.catch(() => undefined)
      digests.push(digest)
      if (!checker || fatal || got < entry.size) return
      try {
        checker.end()
      } catch (e) {
        fatal ??= entryError(name, e)
        parser.abort(fatal)
      }
    })
    visitor.onArtifact?.(entry, record, (e) => {
      fatal ??= e
      parser.abort(fatal)
    })
  })

  const trailer = new TarEndGuard()
  // Every chunk read and decompressed is a fresh Buffer, dead once the parser has it: freed every 4 MiB read, so the
  // pass holds a few MiB of them instead of the 64 MiB V8 would let pile up.
  const reclaim = reclaimEvery(4 << 20)
  const { stream, bytesRead, close } = openTarStream(path, compression, encrypted, fail)
  // An abort (a refused entry, or inspect's early stop) never emits 'drain': waiting for 'drain' alone left the
  // promise pending with nothing else to do, and node exited 13 with "unsettled top-level await" on every refusal.
  let parserDone = false
  const markDone = () => {
    parserDone = true
  }
  parser.once('end', markDone)
  parser.once('abort', markDone)
  parser.once('error', markDone)
  const nextEvent = (events: string[]) =>
    new Promise<void>((resolve) => {
      if (parserDone) return resolve()
      const done = () => {
        for (const e of events) parser.off(e, done)
        resolve()
      }
      for (const e of events) parser.on(e, done)
    })
  // How far the file is read is asked every few MiB decoded (from /proc, when the zstd program reads it): for
  // progress and the reclaim.
  let sinceAsked = Infinity
  try {
    for await (const chunk of stream) {
      if (fatal) break
      sinceAsked += (chunk as Buffer).length
      if (sinceAsked >= 4 << 20) {
        sinceAsked = 0
        const offset = bytesRead()
        visitor.onRead?.(offset, fileSize)
        reclaim(offset)
      }
      trailer.feed(chunk as Buffer)
      if (!parser.write(chunk as Buffer) && !fatal) await nextEvent(['drain', 'end', 'abort', 'error'])
      const room = hasher.roomForMore()
      if (room) await room
    }
    if (!fatal) visitor.onRead?.(bytesRead(), fileSize)
    if (!fatal && trailer.problem) fail(trailer.problem)
    if (!fatal) {
      parser.end()
      await nextEvent(['end', 'abort', 'error'])
    }
    // Every digest is in before the pass is judged (a hashing thread that failed fails the pass).
    if (!fatal) await Promise.all(digests)
  } catch (e) {
    if (!fatal) fail(`cannot read: ${(e as Error).message}`)
  } finally {
    close()
    // The thread ends before the files it may still be writing are closed.
    await hasher.close()
    for (const f of [...openFiles]) closeFile(f)
  }
  // The slots kept for entries whose digest matched are dropped.
  const found = problems.filter((p) => p !== '')
  problems.length = 0
  problems.push(...found)
  // A head read past the manifest only to see whether a signature follows: a stream cut or damaged beyond that point
  // is for verify to find, not a reason to refuse what the head says (a signature begun and not finished is).
  const headWhole = visitor.manifestOnly && manifest !== undefined && (signature !== undefined || !signatureBegun)
  if (fatal && !(fatal instanceof StopReading) && !headWhole) throw fatal
  if (!manifest || !manifestBytes) throw new BundleInvalidError(`${path} is empty or cut before its manifest ended`, [MANIFEST_ENTRY])
  if (!visitor.manifestOnly && !head()) throw fatal!
  if (!visitor.manifestOnly) {
    for (const a of manifest.artifacts) if (!seen.has(a.path)) problems.push(`${a.path}: missing (the bundle is cut or incomplete)`)
  }
  const encryption = encrypted ? { format: encrypted.format, stanzas: encrypted.stanzas, recipients: encrypted.recipients } : undefined
  return { manifest, manifestBytes, compression, ...(encryption ? { encryption } : {}), signature, problems, seen }
}

/** The manifest and its signature (when there is one), reading only the head of the bundle. */
export async function readManifest(path: string): Promise<ManifestRead & { signature?: Buffer }> {
  const r = await scanBundle(path, { manifestOnly: true })
  return { manifest: r.manifest, manifestBytes: r.manifestBytes, compression: r.compression, ...(r.encryption ? { encryption: r.encryption } : {}), signature: r.signature }
}
