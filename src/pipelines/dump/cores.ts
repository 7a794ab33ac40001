// Stage 4: a core for every process of the tree (or the root only, with --cores root), each checked to be an ELF
// core: by gdb's gcore while the tree is frozen, or, with --short-freeze, built from criu's images after release.

import { closeSync, openSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { InterruptedError, StepFailedError, StepTimeoutError } from '../../errors.js'
import { writeCoreFromImages } from '../../corefile/index.js'
import { KernelCopier } from '../../corefile/copy.js'
import { writeCoreOfStoppedProcess } from '../../corefile/native.js'
import { recipeFromCore, writeRecipe, type CoreRecipe } from '../../corefile/recipe.js'
import { GcoreFeed } from './gcore-feed.js'
import { isToolLine, tailLines } from '../../tools/run.js'
import { recheckStopped } from './freeze.js'
import { assertTreeIntact, keptHint, throwIfToolStopped } from './outcome.js'
import { isOutputFault } from './output-fault.js'
import { exitText, MiB, recordTool, toolTimeoutMs, type DumpState } from './state.js'

export function isElfCore(path: string): boolean {
  let fd: number | undefined
  try {
    fd = openSync(path, 'r')
    const h = Buffer.alloc(18)
    if (readSync(fd, h, 0, 18, 0) < 18) return false
    // ELF magic, then e_type (little-endian at offset 16) == ET_CORE (4).
    return h.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])) && h.readUInt16LE(16) === 4
  } catch {
    return false
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

/** The processes that get a core, root first. */
function corePids(s: DumpState): number[] {
  const pids = s.members.map((m) => m.id.pid)
  return s.o.cores === 'root' ? [s.o.pid] : pids
}

export async function coresWithGdb(s: DumpState, report: (d: string) => void): Promise<void> {
  await s.timed('core', async (rec) => {
    s.budget.checkCancelled('the core dump')
    const cores = corePids(s).map((pid) => ({ pid, file: join(s.workDir!, `core.${pid}`) }))
    const logFile = join(s.workDir!, 'logs', 'gdb.log')
    const session = s.gdbSession!
    const t0 = performance.now()
    const rssKiB = (s.target.vmRssKiB ?? 0) * cores.length
    session.armTimeout(s.budget.remainingMs(toolTimeoutMs(rssKiB)))
    const feed = (s.gcoreFeed = new GcoreFeed(session, s.workDir!))
    s.toolHolds = 'gdb'
    let given = 0
    for (const c of cores) {
      if (s.o.cancel.aborted || !(await feed.core(c.pid, c.file))) break
      given++
    }
    feed.finish()
    const run = await session.done
    if (session.pid !== undefined) s.trackTool(session.pid, false)
    assertTreeIntact(s, 'the core dump (gdb)')
    s.toolHolds = undefined
    recordTool(rec, run)
    rec.note = `gdb started before the stop; ${given} of ${cores.length} process(es) given to it one at a time on its stdin (attach, gcore, detach)`
    s.addArtifact('logs/gdb.log', 'log')
    throwIfToolStopped(s, run, 'the core dump (gdb)')
    // gdb's exit status is not proof of a core: check that an ELF core file is really there, for every process.
    const bad = cores.filter((c) => !isElfCore(c.file))
    if (run.exitCode !== 0 || bad.length > 0) {
      const lines = tailLines(logFile, 3, (l) => isToolLine(l) && !/^\(gdb\)\s*$/.test(l))
      const which = bad.length > 0 ? ` for ${bad.map((c) => c.pid).join(', ')}` : ''
      throw new StepFailedError(`gdb did not write a core${which} (${exitText(run)}): ${lines.join(' | ') || 'no output'}`, keptHint(logFile, 'gdb'))
    }
    let bytes = 0
    for (const c of cores) {
      s.coreFiles.set(c.pid, c.file)
      // With a checkpoint, each core becomes a recipe over the images once the tree is back (recipesOfGcoreCores);
      // without one it is stored as it is.
      if (s.mode === 'core-only') s.addArtifact(`core.${c.pid}`, 'core')
      bytes += statSync(c.file).size
    }
    await recheckStopped(s, 'gcore')
    report(`${cores.length} core(s), ${Math.round(bytes / MiB)} MiB in ${Math.round(performance.now() - t0)} ms`)
  })
}

/**
 * --core-only --core native: each stopped process's core written by snap itself from /proc (src/corefile/native.ts):
 * its resident and swapped memory and every thread's registers, so the freeze grows with what is in memory, not
 * with the mapped address space as gcore's does.
 */
export async function coresNative(s: DumpState, report: (d: string) => void): Promise<void> {
  await s.timed('core', async (rec) => {
    const t0 = performance.now()
    const notes: string[] = []
    let bytes = 0
    for (const pid of corePids(s)) {
      s.budget.checkCancelled('the core dump')
      const file = join(s.workDir!, `core.${pid}`)
      const built = await s.budget.unlessStopped(writeCoreOfStoppedProcess({ pid, output: file, cancel: s.o.cancel }), `the core of ${pid}`)
      assertTreeIntact(s, 'the core dump')
      if (!isElfCore(file)) throw new StepFailedError(`the core written for ${pid} is not an ELF core`)
      for (const w of built.warnings) s.warn(`core ${pid}: ${w}`)
      s.coreFiles.set(pid, file)
      s.addArtifact(`core.${pid}`, 'core')
      notes.push(`${pid}: ${built.threads} threads, ${built.loadSegments} segments, ${Math.round(built.copiedBytes / MiB)} MiB read`)
      bytes += statSync(file).size
    }
    rec.note = `written from /proc while the tree was stopped (${notes.join('; ')})`
    await recheckStopped(s, 'the native core')
    report(`${notes.length} core(s), ${Math.round(bytes / MiB)} MiB in ${Math.round(performance.now() - t0)} ms`)
  })
}

/** Stacks only (DumpOptions.stacksOnly): once the stacks are read from them, the cores go, and the manifest names
 *  none (core: null), so the bundle holds the stacks and the manifest. */
export async function leaveCoresOut(s: DumpState, report: (d: string) => void): Promise<void> {
  await s.timed('leave-cores-out', async (rec) => {
    let bytes = 0
    for (const [pid, file] of s.coreFiles) {
      bytes += statSync(file, { throwIfNoEntry: false })?.size ?? 0
      rmSync(file, { force: true })
      const at = s.artifacts.findIndex((a) => a.path === `core.${pid}`)
      if (at >= 0) s.artifacts.splice(at, 1)
    }
    rec.note = `${s.coreFiles.size} core(s), ${Math.round(bytes / MiB)} MiB, read for the stacks and left out`
    report(rec.note)
    s.coreFiles.clear()
  })
}

/** A core kept as its recipe over the images: the recipe and its blob (core-blob.PID, already written) go into the
 *  bundle, its sha256 into the manifest. Returns the blob's bytes. */
function keepAsRecipe(s: DumpState, pid: number, recipe: CoreRecipe): number {
  writeFileSync(join(s.workDir!, `core-recipe.${pid}.json`), JSON.stringify(recipe), { mode: 0o600, flag: 'wx' })
  s.addArtifact(`core-recipe.${pid}.json`, 'core-recipe')
  s.addArtifact(`core-blob.${pid}`, 'core-recipe')
  s.coreRecipes.set(pid, recipe.sha256)
  return recipe.pieces.filter((p) => p.from === 'blob').reduce((sum, p) => sum + p.bytes, 0)
}

/**
 * gcore's cores, after the tree is back: each page the images also hold is stored once, so each core is kept as a
 * recipe over the images and a blob of the rest (recipeFromCore), rebuilt by `snap core` to the same sha256. A core
 * that cannot be matched with the images is stored whole, with a warning.
 */
export async function recipesOfGcoreCores(s: DumpState, report: (d: string) => void): Promise<void> {
  await s.timed('core-recipes', async (rec) => {
    const innerOf = new Map(s.members.map((m) => [m.id.pid, s.container ? m.innerPid : m.id.pid]))
    const notes: string[] = []
    let stored = 0
    for (const [pid, file] of s.coreFiles) {
      s.budget.checkCancelled('matching the cores with the images')
      const blobName = `core-blob.${pid}`
      try {
        const recipe = await s.budget.unlessStopped(
          recipeFromCore(file, s.imagesDir, innerOf.get(pid) ?? pid, join(s.workDir!, blobName)),
          `matching the core of ${pid} with the images`,
        )
        const own = keepAsRecipe(s, pid, recipe)
        const fromImages = recipe.pieces.filter((p) => p.from !== 'blob').reduce((sum, p) => sum + p.bytes, 0)
        notes.push(`${pid}: ${Math.round(fromImages / MiB)} MiB from the images, ${Math.round(own / MiB)} MiB of its own, sha256 ${recipe.sha256}`)
      } catch (e) {
        // Stopped by a signal or the deadline, or a full disk or a vanished output directory: that is the dump's
        // failure, not this core's.
        if (s.o.cancel.aborted || e instanceof InterruptedError || e instanceof StepTimeoutError || isOutputFault(s, e)) throw e
        rmSync(join(s.workDir!, blobName), { force: true })
        s.warn(`core ${pid} is stored whole: it could not be matched with the images (${(e as Error).message})`)
        s.addArtifact(`core.${pid}`, 'core')
        stored++
      }
    }
    rec.note = notes.join('; ')
    report(`${s.coreFiles.size - stored} core(s) kept as recipes over the images${stored ? `, ${stored} stored whole` : ''}`)
  })
}

/** Short freeze: the cores come from criu's images, after the tree is back in its final state. */
export async function coresFromImages(s: DumpState, report: (d: string) => void): Promise<void> {
  await s.timed('core', async (rec) => {
    s.budget.checkCancelled('building the cores')
    const t0 = performance.now()
    const notes: string[] = []
    let bytes = 0
    // The images name each process by the pid criu saw it under: pstree.img's order is the dumped tree's.
    const dumped = s.dumped ?? []
    const wanted = new Set(corePids(s))
    // The images name a process by its pid in the tree's own PID namespace; the core is named by the host's pid.
    const hostOf = new Map(s.members.map((m) => [s.container ? m.innerPid : m.id.pid, m.id.pid]))
    const pids = dumped.map((t) => ({ image: t.pid, host: hostOf.get(t.pid) })).filter((p): p is { image: number; host: number } => p.host !== undefined && wanted.has(p.host))
    // A core's building mostly waits on the disk (copies into the core), so several are built at once, more than the
    // CPUs (101 cores of a python pool here: 2.8 s two at a time, 2.0 s four). Each core's recipe (the reading of the
    // core again for its sha256) is started as soon as the core is there, and runs on while gdb reads the stacks from
    // it: on a 2-core host, 0.1 s of a 64 MiB worker's dump and 0.3 s of a 512 MiB one were that wait. What each adds
    // to the bundle is added in the tree's order once all are read (settleRecipes).
    // A tree's cores are copied by one helper started once (copy.ts): each is too small to pay a start of its own.
    const copier = pids.length > 1 ? KernelCopier.start() : undefined
    const build = async ({ image, host: pid }: { image: number; host: number }) => {
      const file = join(s.workDir!, `core.${pid}`)
      const built = await s.budget.unlessStopped(
        writeCoreFromImages({ imagesDir: s.imagesDir, pid: image, output: file, copier }),
        `building the core of ${pid}`,
      )
      if (!isElfCore(file)) throw new StepFailedError(`the core built from the CRIU images for ${pid} is not an ELF core`)
      // Each page of memory stored once: the bundle keeps the core as a recipe over the images it was built from,
      // and `snap core` rebuilds it, byte for byte (its sha256 is recorded).
      const recipe = writeRecipe(file, built.layout, s.imagesDir, join(s.workDir!, `core-blob.${pid}`))
      recipe.catch(() => undefined) // awaited by settleRecipes, or by the rollback
      return { pid, file, built, recipe }
    }
    const done: Awaited<ReturnType<typeof build>>[] = []
    let next = 0
    let failed = false
    await Promise.all(
      Array.from({ length: Math.min(pids.length, Math.max(4, availableParallelism())) }, async () => {
        // One failure fails the stage: no other core is started after it.
        while (next < pids.length && !failed) {
          const i = next++
          done[i] = await build(pids[i]!).catch((e: unknown) => {
            failed = true
            throw e
          })
        }
      }),
    ).finally(() => {
      copier?.close()
      for (const d of done) if (d) s.recipesUnderWay.set(d.pid, d.recipe)
    })
    for (const { pid, file, built } of done) {
      for (const w of built.warnings) s.warn(`core ${pid}: ${w}`)
      // The core itself stays in the work directory (not in the bundle) until its stacks are read.
      s.coreFiles.set(pid, file)
      notes.push(`${pid}: ${built.threads} threads, ${built.loadSegments} segments, copy ${built.copyMethod}`)
      bytes += built.bytes
    }
    rec.note = `built from the CRIU images after the tree was released, each kept as a recipe over them (${notes.join('; ')})`
    report(`${pids.length} core(s), ${Math.round(bytes / MiB)} MiB (apparent) in ${Math.round(performance.now() - t0)} ms`)
  })
}

/**
 * The recipes of the cores built from the images, once each has read its core: recorded in the tree's order, each
 * with its blob (keepAsRecipe). A recipe that failed fails the dump here, as it failed the core step before its
 * reading overlapped the stacks'.
 */
export async function settleRecipes(s: DumpState): Promise<void> {
  if (s.recipesUnderWay.size === 0) return
  const order = new Map(s.members.map((m, i) => [m.id.pid, i]))
  const under = [...s.recipesUnderWay].sort(([a], [b]) => (order.get(a) ?? 0) - (order.get(b) ?? 0))
  const notes: string[] = []
  for (const [pid, recipe] of under) {
    const r = await s.budget.unlessStopped(recipe, `the recipe of the core of ${pid}`)
    s.recipesUnderWay.delete(pid)
    const blob = keepAsRecipe(s, pid, r)
    notes.push(`${pid}: ${r.pieces.length} pieces, ${blob} bytes of its own, sha256 ${r.sha256}`)
  }
  // Told with the cores they were made from, in the manifest's record of the core step.
  const core = s.steps.find((r) => r.name === 'core')
  if (core) core.note = `${core.note ?? ''}; the recipes: ${notes.join('; ')}`
}
