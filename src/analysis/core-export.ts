// `snap core BUNDLE [--pid P] -o FILE`: one process's core as a file of its own, for gdb and other tools. A core
// stored in the bundle is extracted (checked against its sha256 on the way); one kept as a recipe over the CRIU
// images (the default: each page stored once) is rebuilt and checked against the sha256 recorded at the dump; a
// process of the tree that got none (--cores root) has a core built from the images. The output is never overwritten, is
// private (0600: a core holds the process's secrets), and only gets its name once complete.

import { existsSync, linkSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { readRecipeEntry } from '../bundle/entry-bounds.js'
import { sha256File } from '../bundle/hash.js'
import { checkRoom, verifyAndExtract } from '../bundle/extract.js'
import type { Manifest } from '../bundle/manifest.js'
import { BoundedReadError } from '../bundle/bounded-read.js'
import { CoreBuildError, writeCoreFromImages } from '../corefile/index.js'
import { ImageFormatError } from '../criu-images/errors.js'
import { rebuildCore } from '../corefile/recipe.js'
import { exeOfImages } from '../criu-images/identity.js'
import { BundleInvalidError, OutputPathError, UsageError } from '../errors.js'

export interface CoreExportOptions {
  bundle: string
  /** The process, by the pid snap saw it under on the host; default: the root. */
  pid?: number
  output: string
  /** What to say to do when the output's filesystem has no room (default: give -o elsewhere). */
  roomHint?: string
}

export interface CoreExportResult {
  bundle: string
  pid: number
  output: string
  size: number
  sha256: string
  /** 'stored': the bundle's own core; 'recipe': rebuilt from the recipe recorded at the dump, its sha256 checked;
   *  'built': a new core built from the CRIU images, for a process that got none. */
  source: 'stored' | 'recipe' | 'built'
  /** The process's executable as the images (or, for the root, the manifest) name it, when known. */
  exe?: string
}

type Plan = { entry: string } | { recipe: string; blob: string } | { imagePid: number }

/** What the bundle can give for `pid`: its stored core's entry, its core's recipe, or the images' name for the
 *  process to build one from; or nothing. */
function planFor(manifest: Manifest, pid: number): Plan {
  const entry = `core.${pid}`
  if (manifest.artifacts.some((a) => a.kind === 'core' && a.path === entry)) return { entry }
  const recipe = `core-recipe.${pid}.json`
  const blob = `core-blob.${pid}`
  const has = (path: string) => manifest.artifacts.some((a) => a.kind === 'core-recipe' && a.path === path)
  if (has(recipe) && has(blob)) return { recipe, blob }
  const processes: { pid: number; hostPid?: number; core?: string | null }[] = manifest.processes ?? [{ pid: manifest.target.pid, core: 'core' }]
  const process_ = processes.find((p) => (p.hostPid ?? p.pid) === pid)
  const withCores = processes.filter((p) => p.core).map((p) => p.hostPid ?? p.pid)
  if (!process_)
    throw new UsageError(
      `process ${pid} is not in ${manifest.target.pid}'s bundle`,
      `its processes are ${processes.map((p) => p.hostPid ?? p.pid).join(', ')}${withCores.length ? `; cores are stored for ${withCores.join(', ')}` : ''}`,
    )
  if (!manifest.artifacts.some((a) => a.kind === 'criu-image'))
    throw new BundleInvalidError(`the bundle holds no core of process ${pid} and no CRIU images to build one from`, [], 'take a new dump with --cores all')
  return { imagePid: process_.pid }
}

export async function exportCore(o: CoreExportOptions): Promise<CoreExportResult> {
  const output = resolve(o.output)
  if (existsSync(output)) throw new OutputPathError(`${output} already exists`, 'choose another name; snap never overwrites a file')
  const dir = dirname(output)
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new OutputPathError(`directory ${dir} does not exist`, 'create it first, or choose another -o')
  // Beside the output, so the finished file is linked into place on the same filesystem.
  const work = mkdtempSync(join(dir, '.snap-core-'))
  const roomHint = o.roomHint ?? 'free space there, or give -o a filesystem with room'
  try {
    let plan: Plan | undefined
    let manifest: Manifest | undefined
    let sha256AtDump: string | undefined
    let imagePidOf: number | undefined
    let rootPid: number | undefined
    let rootExe: string | undefined
    let pid = o.pid
    const scan = await verifyAndExtract({
      bundle: o.bundle,
      into: work,
      roomHint,
      onHead: (head) => {
        manifest = head.manifest
        pid ??= manifest.target.pid
        plan = planFor(manifest, pid)
        const record = manifest.processes?.find((p) => (p.hostPid ?? p.pid) === pid)
        sha256AtDump = record?.coreSha256
        imagePidOf = record?.pid
        rootPid = manifest.target.pid
        rootExe = manifest.target.exe && !manifest.target.exe.endsWith(' (deleted)') ? manifest.target.exe : undefined
      },
      want: (a) => {
        if (plan === undefined) return false
        if ('entry' in plan) return a.path === plan.entry
        if ('recipe' in plan) return a.kind === 'criu-image' || a.path === plan.recipe || a.path === plan.blob
        return a.kind === 'criu-image'
      },
    })
    if (scan.problems.length > 0)
      throw new BundleInvalidError(`${o.bundle} failed verification: ${scan.problems.join('; ')}`, scan.problems, 'no core was written')
    if (!plan || pid === undefined) throw new BundleInvalidError(`${o.bundle} has no manifest`, [])
    if ('entry' in plan) {
      linkSync(join(work, plan.entry), output) // never replaces a file that appeared there meanwhile
    } else if ('recipe' in plan) {
      // Held to the manifest's images and blob as it is read (no piece outside them, no more pieces than they can
      // make), into a table of 28 bytes a piece.
      const recipe = readRecipeEntry(join(work, plan.recipe), plan.recipe, manifest!, pid)
      if (sha256AtDump && recipe.sha256 !== sha256AtDump)
        throw new BundleInvalidError(`the core recipe of ${pid} is for another core than the manifest records`, [plan.recipe], 'no core was written')
      // The core is sparse: what it takes on disk is what its pieces hold.
      let data = 0
      for (let i = 0; i < recipe.count; i++) data += recipe.bytes[i]!
      checkRoom(o.bundle, dir, [{ path: `the core of ${pid}`, size: data }], roomHint, 'rebuilt from its recipe takes')
      await rebuildCore(recipe, join(work, 'criu'), join(work, plan.blob), output)
    } else {
      // The images were held to their declared sizes as they were extracted; the core's size is known from them
      // before a byte of it is written, and checked against the room left beside the output.
      const checkCore = (bytes: number) => checkRoom(o.bundle, dir, [{ path: `the core of ${pid}`, size: bytes }], roomHint, 'built from its images takes')
      try {
        await writeCoreFromImages({ imagesDir: join(work, 'criu'), pid: plan.imagePid, output, checkRoom: checkCore })
      } catch (e) {
        // Images past what snap reads, or not what criu writes, are the bundle's fault, not the build's.
        if (e instanceof CoreBuildError && (e.cause instanceof ImageFormatError || e.cause instanceof BoundedReadError))
          throw new BundleInvalidError(`${o.bundle}: the core of ${pid} cannot be built from its images: ${e.message}`, [], 'no core was written')
        throw e
      }
    }
    const { sha256 } = await sha256File(output)
    const source = 'entry' in plan ? 'stored' : 'recipe' in plan ? 'recipe' : 'built'
    const imagePid = 'imagePid' in plan ? plan.imagePid : (imagePidOf ?? pid)
    // Read without decoding every mapping and file: the images are the bundle's, and decoded whole a hostile mm image
    // of 4 MiB cost 400 MB.
    const exe = ('entry' in plan ? undefined : exeOfImages(join(work, 'criu'), imagePid)) ?? (pid === rootPid ? rootExe : undefined)
    return { bundle: o.bundle, pid, output, size: statSync(output).size, sha256, source, ...(exe ? { exe } : {}) }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}
