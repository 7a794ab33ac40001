// Every thread's backtrace from a core, as gdb unwinds it: the first thing an engineer reads of a capture. gdb runs
// in batch mode on the core with the process's executable, and its Python writes the frames as JSON to a file (its
// printed output is for people and changes between versions).

import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { readBoundedRegularFile, readJsonFile } from '../bundle/bounded-read.js'
import { onlyRootCouldWrite } from '../tools/gdb-index-cache.js'
import { startTool, type ToolRun } from '../tools/run.js'
import { BATCH_SCRIPT } from './stacks-batch.js'
import { threadsShape, type ProcessStacks, type ThreadStack } from './stacks-model.js'
import { detectRuntime, goVersionOfExecutable, mappedFilesOfCore, type RuntimeRecord } from './runtimes/detect.js'
import { findDelve, goroutinesFromCore, goroutinesWithin } from './runtimes/go.js'
import { javaThreadsFromCore, jhsdbBeside, linkLibraryNames } from './runtimes/java.js'
import { debugFileArgs, pythonDebugPackage, pythonGdbExtension, pythonWalkerFunctions, pythonWalkShape, type PythonWalk } from './runtimes/python.js'

const MAX_GDB_THREADS = 1 << 16
const MAX_GDB_OUTPUT = 32 << 20

/** A process whose stacks are read from its core. */
export interface CoreToUnwind {
  pid: number
  comm: string
  core: string
  exe?: string
}

export interface UnwindOptions {
  gdb: string
  /** gdb's settings that find the libraries somewhere else than this host's root (a bundle's binaries/). */
  fileArgs?: string[]
  /** That other root: where the runtime's reader looks first for what it needs (CPython's extension and debug
   *  info, carried by --include-binaries). */
  sysroot?: string
  /** Private; takes gdb's scripts, outputs and logs. */
  workDir: string
  /** The time one process may take, asked again for each (the caller's deadline shortens it); may throw when the
   *  caller's deadline has passed, which ends the unwinding with that error. */
  perProcessMs: () => number
  cancel?: AbortSignal
  /** gdbs run at once; default the machine's cores. */
  parallel?: number
  /** One gdb start per process, no cache shared between them: the unwinding as it was before batches, kept for the
   *  benchmark's comparison. */
  onePerProcess?: boolean
  /** Where gdb's index of debug info is kept between runs (sharedGdbIndexDir), for this host's own binaries: used for
   *  a batch whose files only root could have written; otherwise, and without it, the index lasts one run. */
  indexCache?: string
  /** Called once a process's stacks are read (or could not be): its core is no longer needed. */
  onDone?: (pid: number) => void
  /** Told each gdb's pid when it starts (running) and when it has exited: a dump's journal names it for recover. */
  onTool?: (pid: number, running: boolean) => void
}

/** Each process's stacks, or why gdb could not read them, in the order given; sharedSymbols: read with the libraries'
 *  symbols of cores of the same layout (stacks-batch.ts); runtimeStructs: its Python frames read from the
 *  interpreter's structs in one piece (python-structs.ts). */
export type UnwindResult =
  | { pid: number; stacks: ProcessStacks; error?: undefined; sharedSymbols?: boolean; runtimeStructs?: boolean }
  | { pid: number; stacks?: undefined; error: string }

interface BatchItem extends CoreToUnwind {
  /** What its core says the process mapped; undefined when the core does not say. */
  mapped?: string[]
  runtime?: RuntimeRecord
  out: string
  done: string
  pyOut?: string
  /** Why the language's frames are not read, decided before gdb runs. */
  langError?: string
}

/**
 * The stacks of many processes: one gdb per executable (the same file: path and identity), that loads it once and
 * reads each of its processes' cores in turn; batches of one executable split so that up to `parallel` gdbs run at
 * once. A core gdb hangs on costs its own per-process time: gdb is stopped and the rest of its batch goes to another.
 * Go's and Java's readers (delve, jhsdb) then run on each process of theirs.
 */
export async function stacksFromCores(cores: CoreToUnwind[], o: UnwindOptions): Promise<UnwindResult[]> {
  const items: BatchItem[] = cores.map((c) => {
    const mapped = mappedFilesOf(c.core)
    const runtime = runtimeOfCore(mapped, c.exe, o.sysroot)
    const base = join(o.workDir, `stacks-${c.pid}`)
    return { ...c, mapped, runtime, out: `${base}.json`, done: `${base}.done` }
  })
  const extensionOf = new Map<BatchItem, string>()
  for (const it of items) {
    if (it.runtime?.name !== 'python') continue
    const extension = pythonGdbExtension(it.runtime, o.sysroot)
    if (extension) {
      extensionOf.set(it, extension)
      it.pyOut = join(o.workDir, `stacks-${it.pid}.python.json`)
    } else it.langError = `CPython's gdb extension for ${it.runtime.file} is not installed (Debian: apt-get install ${pythonDebugPackage(it.runtime.version)})`
  }
  const parallel = o.onePerProcess ? 1 : Math.max(1, o.parallel ?? availableParallelism())
  const groups = new Map<string, BatchItem[]>()
  for (const it of items) {
    const key = o.onePerProcess ? `pid ${it.pid}` : `${fileIdentity(it.exe)}\n${extensionOf.get(it) ?? ''}`
    groups.set(key, [...(groups.get(key) ?? []), it])
  }
  // Each executable's processes in batches no larger than an even share of the machine, the largest first.
  const share = Math.max(1, Math.ceil(items.length / parallel))
  const batches: BatchItem[][] = []
  for (const g of groups.values()) for (let i = 0; i < g.length; i += share) batches.push(g.slice(i, i + share))
  batches.sort((a, b) => b.length - a.length)
  const cacheDir = o.onePerProcess ? undefined : join(o.workDir, 'gdb-index-cache')
  if (cacheDir) mkdirSync(cacheDir, { recursive: true, mode: 0o700 })
  // The index kept between runs, for a batch of files only root could have written (gdb-index-cache.ts).
  const rootOnly = new Map<string, boolean>()
  const indexDirOf = (batch: BatchItem[]): string | undefined =>
    cacheDir && o.indexCache && batch.every((it) => it.exe && it.mapped && onlyRootCouldWrite([it.exe, ...it.mapped], rootOnly)) ? o.indexCache : cacheDir
  const results = new Map<number, UnwindResult>()
  let failure: unknown
  const finish = async (it: BatchItem, gdbError: string | undefined): Promise<void> => {
    try {
      results.set(it.pid, await collect(it, gdbError, o))
    } catch (e) {
      // Never thrown from here: a cancel is thrown by the batch, once its gdb is gone.
      results.set(it.pid, { pid: it.pid, error: (e as Error).message })
    } finally {
      o.onDone?.(it.pid)
    }
  }
  try {
    await inParallel(batches, parallel, async (batch, n) => {
      if (failure) return
      try {
        await runBatch(batch, extensionOf.get(batch[0]!), `${n}`, indexDirOf(batch), o, finish)
      } catch (e) {
        failure ??= e
      }
    })
  } finally {
    if (cacheDir) rmSync(cacheDir, { recursive: true, force: true })
  }
  o.cancel?.throwIfAborted()
  if (failure) throw failure
  return items.map((it) => results.get(it.pid) ?? { pid: it.pid, error: 'gdb did not get to it' })
}

/** The file an executable is, so that processes of the same build share a gdb: its path, device, inode, size and
 *  change time; '' for a process whose executable is not here (gdb reads its core alone). */
function fileIdentity(exe: string | undefined): string {
  if (!exe) return ''
  try {
    const st = statSync(exe)
    return `${exe}\n${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`
  } catch {
    return exe
  }
}

async function inParallel<T>(work: T[], n: number, run: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(n, work.length) }, async () => {
      while (next < work.length) {
        const i = next++
        await run(work[i]!, i)
      }
    }),
  )
}

/** Polled for gdb's markers: a core takes a few hundred ms, so a finished one is seen soon after. */
const MARKER_POLL_MS = 50

/** One gdb over a batch; what it could not finish goes to a new gdb, the core it stopped on reported. */
async function runBatch(
  batch: BatchItem[],
  extension: string | undefined,
  name: string,
  cacheDir: string | undefined,
  o: UnwindOptions,
  finish: (it: BatchItem, gdbError: string | undefined) => Promise<void>,
): Promise<void> {
  let left = batch
  for (let attempt = 0; left.length > 0; attempt++) {
    o.cancel?.throwIfAborted()
    const tag = `${name}${attempt ? `.${attempt}` : ''}`
    const list = join(o.workDir, `stacks-batch-${tag}.json`)
    writeFileSync(list, JSON.stringify(left.map((it) => ({ pid: it.pid, core: it.core, out: it.out, done: it.done, pyOut: it.pyOut }))), { mode: 0o600 })
    const script = join(o.workDir, 'stacks-batch.py')
    writeFileSync(script, BATCH_SCRIPT, { mode: 0o600 })
    const walker = extension ? join(o.workDir, `stacks-python-${tag}.py`) : undefined
    if (walker) writeFileSync(walker, pythonWalkerFunctions(extension!), { mode: 0o600 })
    const exe = left[0]!.exe
    const tool = startTool(
      o.gdb,
      [
        '--nx', '--batch', '--quiet',
        '-iex', 'set debuginfod enabled off',
        '-iex', 'set auto-load no',
        // gdb's index of each executable's and library's debug info, made once and read by every later core:
        // without it, each core-file read it all again (0.5 s a core against 0.1-0.2 s measured on a python's).
        ...(cacheDir ? ['-iex', `set index-cache directory ${cacheDir}`, '-iex', 'set index-cache enabled on'] : []),
        ...(o.fileArgs ?? []),
        '-ex', `python SNAP_BATCH = ${JSON.stringify(list)}`,
        // Libraries shared between cores of one layout (stacks-batch.ts): not where gdb finds them through a sysroot.
        '-ex', `python SNAP_EXE = ${JSON.stringify(exe ?? '')}`,
        '-ex', `python SNAP_SHARE = ${!o.onePerProcess && !o.fileArgs?.length && left.length > 2 ? 'True' : 'False'}`,
        ...(walker ? [...debugFileArgs(o.sysroot), '-x', walker] : []),
        '-x', script,
        ...(exe ? [exe] : []),
      ],
      { timeoutMs: perProcess(o), cancel: o.cancel, logFile: join(o.workDir, `stacks-gdb-${tag}.log`), onSpawn: (pid) => o.onTool?.(pid, true) },
    )
    // Each core gets its own time: the deadline starts again as each marker appears.
    let seen = 0
    let deadlinePassed: unknown
    const pending: Promise<void>[] = []
    const poll = setInterval(() => {
      let moved = false
      while (seen < left.length && existsSync(left[seen]!.done)) {
        pending.push(finish(left[seen++]!, undefined))
        moved = true
      }
      if (!moved) return
      try {
        tool.armTimeout(perProcess(o))
      } catch (e) {
        deadlinePassed = e
        tool.armTimeout(0)
      }
    }, MARKER_POLL_MS)
    let run: ToolRun
    try {
      run = await tool.done
    } finally {
      clearInterval(poll)
    }
    if (run.pid !== undefined) o.onTool?.(run.pid, false)
    while (seen < left.length && existsSync(left[seen]!.done)) pending.push(finish(left[seen++]!, undefined))
    await Promise.all(pending)
    if (deadlinePassed) throw deadlinePassed
    if (run.cancelled) o.cancel?.throwIfAborted()
    if (seen >= left.length) return
    // gdb ended before the marker of this core: stopped at its time, or dead on it. The rest go to a new gdb.
    await finish(left[seen]!, `gdb ${run.timedOut ? 'ran past its time' : `ended (${run.signal ?? `exit ${run.exitCode}`})`} on its core`)
    left = left.slice(seen + 1)
  }
}

function perProcess(o: UnwindOptions): number {
  return Math.max(1, o.perProcessMs())
}

/** What gdb wrote for one process, with the language's frames, and Go's and Java's read now. */
async function collect(it: BatchItem, gdbError: string | undefined, o: UnwindOptions): Promise<UnwindResult> {
  const marker = existsSync(it.done) ? readBoundedRegularFile(it.done, 8192).toString('utf8') : ''
  let threads: ThreadStack[]
  try {
    // The core may come from a bundle: what gdb makes of it is read as bounded as the bundle itself.
    threads = readJsonFile(it.out, threadsShape(MAX_GDB_THREADS), MAX_GDB_OUTPUT) as ThreadStack[]
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { pid: it.pid, error: `gdb wrote no stacks (${gdbError ?? (marker || 'no reason given')})` }
    return { pid: it.pid, error: `gdb's stacks cannot be read: ${(e as Error).message}` }
  }
  if (threads.length === 0) return { pid: it.pid, error: 'gdb found no thread in the core' }
  const started = performance.now()
  let runtimeError = it.langError
  if (it.pyOut) {
    const walk = readLanguageWalk(it.pyOut)
    // Without the walker's output, what stopped gdb says more than its absence.
    if (walk.error) runtimeError = `gdb could not read the interpreter's frames: ${existsSync(it.pyOut) ? walk.error : (gdbError ?? (marker || walk.error))}`
    const byTid = new Map(walk.threads.map((t) => [t.tid, t]))
    for (const t of threads) {
      const w = byTid.get(t.tid)
      if (w) Object.assign(t, { name: w.name, runtimeFrames: w.frames })
    }
  }
  const runtime = it.runtime
  // delve and jhsdb get the process's time, as gdb had.
  const rest = { exe: it.exe, sysroot: o.sysroot, core: it.core, pid: it.pid, workDir: o.workDir, cancel: o.cancel, timeoutMs: Math.max(1000, perProcess(o) - (performance.now() - started)) }
  if (runtime?.name === 'java') runtimeError = (await javaFrames(threads, runtime, rest)) ?? runtimeError
  let go: Pick<ProcessStacks, 'goroutines' | 'goroutinesOmitted'> = {}
  if (runtime?.name === 'go') {
    const dlv = findDelve()
    if (!dlv || !it.exe) runtimeError = !dlv ? 'delve is not installed, so its goroutines are not read (Debian: apt-get install delve)' : 'its executable is not here for delve to read its goroutines'
    else {
      try {
        const found = await goroutinesFromCore({ dlv, exe: it.exe, core: it.core, pid: it.pid, workDir: o.workDir, timeoutMs: rest.timeoutMs, cancel: o.cancel })
        // stacks.json has room for so much a thread (entry-bounds.ts): the goroutines take half of the process's.
        const kept = goroutinesWithin(found.goroutines, threads.length * GOROUTINE_BYTES_PER_THREAD)
        go = { goroutines: kept, ...(found.more + found.goroutines.length - kept.length > 0 ? { goroutinesOmitted: found.more + found.goroutines.length - kept.length } : {}) }
      } catch (e) {
        if (o.cancel?.aborted) throw e
        runtimeError = `delve could not read the goroutines: ${(e as Error).message}`
      }
    }
  }
  const stacks: ProcessStacks = { pid: it.pid, comm: it.comm, exe: it.exe ?? null, threads, ...(runtime ? { runtime } : {}), ...go, ...(runtimeError ? { runtimeError } : {}) }
  return {
    pid: it.pid,
    stacks,
    ...(existsSync(`${it.out}.shared`) ? { sharedSymbols: true } : {}),
    ...(it.pyOut && existsSync(`${it.pyOut}.structs`) ? { runtimeStructs: true } : {}),
  }
}

/** Each Java thread's name, state and frames onto its OS thread, through the JDK's jhsdb; why not, when not. */
async function javaFrames(threads: ThreadStack[], runtime: RuntimeRecord, o: { exe?: string; sysroot?: string; core: string; pid: number; workDir: string; timeoutMs: number; cancel?: AbortSignal }): Promise<string | undefined> {
  if (!o.exe) return 'its java executable is not here for jhsdb to read its Java threads'
  // The JDK is this host's, where the process ran it: a bundle carries the JVM's libraries (then SA_ALTROOT points
  // the agent at them), not jhsdb and the JDK's modules.
  const ran = o.sysroot && o.exe.startsWith(`${o.sysroot}/`) ? o.exe.slice(o.sysroot.length) : o.exe
  const jhsdb = jhsdbBeside(ran)
  if (!jhsdb) return `the JDK of ${ran} has no jhsdb here, so its Java threads are not read (Debian: the openjdk-N-jdk-headless of ${runtime.version ?? 'that JVM'})`
  try {
    if (ran !== o.exe) linkLibraryNames(o.sysroot!)
    const found = await javaThreadsFromCore({ jhsdb, exe: o.exe, core: o.core, pid: o.pid, workDir: o.workDir, timeoutMs: o.timeoutMs, cancel: o.cancel, altRoot: ran === o.exe ? undefined : o.sysroot })
    const byTid = new Map(found.map((t) => [t.tid, t]))
    for (const t of threads) {
      const j = byTid.get(t.tid)
      if (j) Object.assign(t, { name: j.name, state: j.state, runtimeFrames: j.frames })
    }
    return undefined
  } catch (e) {
    if (o.cancel?.aborted) throw e
    return `jhsdb could not read the Java threads: ${(e as Error).message}`
  }
}

/** Half of what stacks.json may hold for each thread of a process (entry-bounds.ts allows 256 KiB). */
const GOROUTINE_BYTES_PER_THREAD = 128 << 10

/** The runtime a core shows by the files it maps and its executable's Go build info; undefined for a native
 *  program or a core whose notes cannot be read (its native stacks are still read). An executable under `sysroot`
 *  is named as the process ran it. */
export function runtimeOfCore(mappedFiles: string[] | undefined, exe: string | undefined, sysroot?: string): RuntimeRecord | undefined {
  if (!mappedFiles) return undefined
  const ran = exe && sysroot && exe.startsWith(`${sysroot}/`) ? exe.slice(sysroot.length) : exe
  try {
    return detectRuntime({ exe: ran ?? null, mappedFiles, goVersion: exe ? goVersionOfExecutable(exe) : undefined }) ?? undefined
  } catch {
    return undefined
  }
}

/** The files a core says its process mapped (its NT_FILE note), or undefined when it cannot be read. */
function mappedFilesOf(core: string): string[] | undefined {
  try {
    return mappedFilesOfCore(core)
  } catch {
    return undefined
  }
}

function readLanguageWalk(output: string): PythonWalk {
  try {
    return readJsonFile(output, pythonWalkShape, MAX_GDB_OUTPUT) as PythonWalk
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { error: 'gdb wrote none', threads: [] }
    return { error: `gdb's output cannot be read: ${(e as Error).message}`, threads: [] }
  }
}
