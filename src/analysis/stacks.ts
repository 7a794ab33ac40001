// Every thread's backtrace from a core, as gdb unwinds it: the first thing an engineer reads of a capture. gdb runs
// in batch mode on the core with the process's executable, and its Python writes the frames as JSON to a file (its
// printed output is for people and changes between versions).

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { readJsonFile } from '../bundle/bounded-read.js'
import { array, int, object, string, type ArrayShape, type ObjectShape } from '../bundle/json-stream.js'
import { runTool } from '../tools/run.js'
import { detectRuntime, goVersionOfExecutable, mappedFilesOfCore, type RuntimeRecord } from './runtimes/detect.js'
import { findDelve, goroutinesFromCore, goroutinesWithin, MAX_GOROUTINE_FRAMES, MAX_GOROUTINES, type Goroutine } from './runtimes/go.js'
import { javaThreadsFromCore, jhsdbBeside, linkLibraryNames } from './runtimes/java.js'
import { debugFileArgs, MAX_RUNTIME_FRAMES, pythonDebugPackage, pythonGdbExtension, pythonWalkerScript, pythonWalkShape, runtimeFrameShape, type PythonWalk, type RuntimeFrame } from './runtimes/python.js'

export interface Frame {
  pc: string
  function: string | null
  file: string | null
  line: number | null
  /** The shared library the pc is in, when not the executable. */
  library: string | null
}

export interface ThreadStack {
  tid: number
  frames: Frame[]
  /** The thread's name in its language (Python's threading name), when its runtime's reader gave one. */
  name?: string | null
  /** Its frames in the process's language, innermost first: Python's function, file and line; Java's
   *  class.method and line. */
  runtimeFrames?: RuntimeFrame[]
  /** Java: the thread's state as jstack prints it ("WAITING (on object monitor)"). */
  state?: string | null
}

export interface ProcessStacks {
  pid: number
  comm: string
  exe: string | null
  threads: ThreadStack[]
  /** The language runtime the core shows (libpython, a pythonX.Y executable, libjvm.so, Go's build info). */
  runtime?: RuntimeRecord
  /** Go: every goroutine with its state and frames, innermost first (the first MAX_GOROUTINES, within the room
   *  stacks.json has for the process). */
  goroutines?: Goroutine[]
  /** Go: the goroutines left out past that. */
  goroutinesOmitted?: number
  /** Why the threads have no frames of that language (its reader is not installed, or failed on this core). */
  runtimeError?: string
}

/** Deeper than this is a loop in a corrupt stack, not a program. */
export const MAX_FRAMES = 256

// The stacks as gdb's script below and the dump write them, as the shape a reader holds them to: every string
// bounded (a demangled C++ name runs to a few KiB, a path to PATH_MAX), at most MAX_FRAMES frames a thread.
const frameShape = object({
  pc: string(18, { pattern: /^0x[0-9a-f]{1,16}$/ }),
  function: string(16384, { nullable: true }),
  file: string(4096, { nullable: true }),
  line: int(0, 2 ** 31 - 1, { nullable: true }),
  library: string(4096, { nullable: true }),
})
const threadShape = object(
  {
    tid: int(0, 2 ** 31 - 1),
    frames: array(frameShape, MAX_FRAMES, { maxWhy: 'the frames snap unwinds' }),
    name: string(4096, { nullable: true }),
    state: string(256, { nullable: true }),
    runtimeFrames: array(runtimeFrameShape, MAX_RUNTIME_FRAMES, { maxWhy: 'the language frames snap reads' }),
  },
  ['tid', 'frames'],
)
const goroutineShape = object({
  id: int(0, 2 ** 53 - 1),
  state: string(256, { nullable: true }),
  thread: int(0, 2 ** 31 - 1, { nullable: true }),
  frames: array(runtimeFrameShape, MAX_GOROUTINE_FRAMES, { maxWhy: 'the goroutine frames snap reads' }),
})
const runtimeShape = object({ name: string(16, { pattern: /^[a-z]+$/ }), version: string(256, { nullable: true }), file: string(8192) })

/** A process's threads, as gdb's script writes them; at most `maxThreads`. */
export const threadsShape = (maxThreads: number, maxWhy?: string): ArrayShape => array(threadShape, maxThreads, { maxWhy })

/** One process's stacks, as stacks.json holds them; at most `maxThreads` threads. */
export const processStacksShape = (maxThreads: number, maxWhy?: string): ObjectShape =>
  object(
    {
      pid: int(0, 2 ** 31 - 1),
      comm: string(256),
      exe: string(8192, { nullable: true }),
      threads: threadsShape(maxThreads, maxWhy),
      runtime: runtimeShape,
      runtimeError: string(4096),
      goroutines: array(goroutineShape, MAX_GOROUTINES, { maxWhy: 'the goroutines snap reads' }),
      goroutinesOmitted: int(0, 2 ** 31 - 1),
    },
    ['pid', 'comm', 'exe', 'threads'],
  )

/** What gdb's script may write for one core: a thread count no core of a real process reaches. */
const MAX_GDB_THREADS = 1 << 16
const MAX_GDB_OUTPUT = 32 << 20

const SCRIPT = `
import gdb, json
out = []
for th in sorted(gdb.selected_inferior().threads(), key=lambda t: t.num):
    th.switch()
    frames = []
    f = gdb.newest_frame()
    while f is not None and len(frames) < ${MAX_FRAMES}:
        sal = f.find_sal()
        frames.append({
            'pc': hex(f.pc()),
            'function': f.name(),
            'file': sal.symtab.filename if sal.symtab else None,
            'line': sal.line or None,
            'library': gdb.solib_name(f.pc()),
        })
        try:
            f = f.older()
        except gdb.error:
            break
    out.append({'tid': th.ptid[1], 'frames': frames})
with open(STACKS_OUT, 'w') as fh:
    json.dump(out, fh)
`

/** The stacks of one process from its core; `workDir` is private and takes gdb's script, output and log. */
export async function stacksFromCore(o: {
  gdb: string
  core: string
  exe?: string
  /** gdb's settings that find the libraries somewhere else than this host's root (a bundle's binaries/). */
  fileArgs?: string[]
  /** That other root: where the runtime's reader looks first for what it needs (CPython's extension and debug
   *  info, carried by --include-binaries). */
  sysroot?: string
  pid: number
  comm: string
  workDir: string
  timeoutMs: number
  cancel?: AbortSignal
}): Promise<ProcessStacks> {
  const script = join(o.workDir, `stacks-${o.pid}.py`)
  const output = join(o.workDir, `stacks-${o.pid}.json`)
  writeFileSync(script, SCRIPT, { mode: 0o600 })
  // The language's frames are read in the same gdb run, after the native ones: one start-up, one load of the
  // debug info.
  const runtime = runtimeOfCore(o.core, o.exe, o.sysroot)
  const lang = languageReader(runtime, o)
  const started = performance.now()
  const run = await runTool(
    o.gdb,
    [
      '--nx', '--batch', '--quiet',
      '-iex', 'set debuginfod enabled off',
      '-iex', 'set auto-load no',
      ...(o.fileArgs ?? []),
      '-ex', `python STACKS_OUT = ${JSON.stringify(output)}`,
      '-x', script,
      ...(lang.script ? [...debugFileArgs(o.sysroot), '-x', lang.script] : []),
      ...(o.exe ? [o.exe] : []),
      o.core,
    ],
    { timeoutMs: o.timeoutMs, cancel: o.cancel, logFile: join(o.workDir, `stacks-${o.pid}.log`) },
  )
  let threads: ThreadStack[]
  try {
    // The core may come from a bundle: what gdb makes of it is read as bounded as the bundle itself.
    threads = readJsonFile(output, threadsShape(MAX_GDB_THREADS), MAX_GDB_OUTPUT) as ThreadStack[]
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`gdb wrote no stacks (${run.timedOut ? 'timed out' : `exit ${run.exitCode}`})`)
    throw new Error(`gdb's stacks cannot be read: ${(e as Error).message}`)
  }
  if (threads.length === 0) throw new Error('gdb found no thread in the core')
  let runtimeError = lang.error
  if (lang.output) {
    const walk = readLanguageWalk(lang.output)
    if (walk.error) runtimeError = `gdb could not read the interpreter's frames: ${walk.error}`
    const byTid = new Map(walk.threads.map((t) => [t.tid, t]))
    for (const t of threads) {
      const w = byTid.get(t.tid)
      if (w) Object.assign(t, { name: w.name, runtimeFrames: w.frames })
    }
  }
  // delve and jhsdb get what gdb left of the process's time, not a time of their own.
  const rest = { ...o, timeoutMs: Math.max(1000, o.timeoutMs - (performance.now() - started)) }
  if (runtime?.name === 'java') runtimeError = (await javaFrames(threads, runtime, rest)) ?? runtimeError
  let go: Pick<ProcessStacks, 'goroutines' | 'goroutinesOmitted'> = {}
  if (runtime?.name === 'go') {
    const dlv = findDelve()
    if (!dlv || !o.exe) runtimeError = !dlv ? 'delve is not installed, so its goroutines are not read (Debian: apt-get install delve)' : 'its executable is not here for delve to read its goroutines'
    else {
      try {
        const found = await goroutinesFromCore({ dlv, exe: o.exe, core: o.core, pid: o.pid, workDir: o.workDir, timeoutMs: rest.timeoutMs, cancel: o.cancel })
        // stacks.json has room for so much a thread (entry-bounds.ts): the goroutines take half of the process's.
        const kept = goroutinesWithin(found.goroutines, threads.length * GOROUTINE_BYTES_PER_THREAD)
        go = { goroutines: kept, ...(found.more + found.goroutines.length - kept.length > 0 ? { goroutinesOmitted: found.more + found.goroutines.length - kept.length } : {}) }
      } catch (e) {
        if (o.cancel?.aborted) throw e
        runtimeError = `delve could not read the goroutines: ${(e as Error).message}`
      }
    }
  }
  return { pid: o.pid, comm: o.comm, exe: o.exe ?? null, threads, ...(runtime ? { runtime } : {}), ...go, ...(runtimeError ? { runtimeError } : {}) }
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
export function runtimeOfCore(core: string, exe: string | undefined, sysroot?: string): RuntimeRecord | undefined {
  const ran = exe && sysroot && exe.startsWith(`${sysroot}/`) ? exe.slice(sysroot.length) : exe
  try {
    return detectRuntime({ exe: ran ?? null, mappedFiles: mappedFilesOfCore(core), goVersion: exe ? goVersionOfExecutable(exe) : undefined }) ?? undefined
  } catch {
    return undefined
  }
}

/** The gdb script that reads the runtime's own frames, where this host has its reader; else why not. */
function languageReader(runtime: RuntimeRecord | undefined, o: { pid: number; workDir: string; sysroot?: string }): { script?: string; output?: string; error?: string } {
  if (runtime?.name !== 'python') return {}
  const extension = pythonGdbExtension(runtime, o.sysroot)
  if (!extension)
    return { error: `CPython's gdb extension for ${runtime.file} is not installed (Debian: apt-get install ${pythonDebugPackage(runtime.version)})` }
  const script = join(o.workDir, `stacks-${o.pid}.python.py`)
  const output = join(o.workDir, `stacks-${o.pid}.python.json`)
  writeFileSync(script, pythonWalkerScript(extension, output), { mode: 0o600 })
  return { script, output }
}

function readLanguageWalk(output: string): PythonWalk {
  try {
    return readJsonFile(output, pythonWalkShape, MAX_GDB_OUTPUT) as PythonWalk
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { error: 'gdb wrote none', threads: [] }
    return { error: `gdb's output cannot be read: ${(e as Error).message}`, threads: [] }
  }
}

/** The stacks as people read them, in the shape of gdb's own backtrace. */
export function renderStacks(all: ProcessStacks[]): string {
  return [...stacksLines(all)].join('\n')
}

/** The same, a line at a time. */
export function* stacksLines(all: ProcessStacks[]): Generator<string> {
  for (const p of all) {
    yield `process ${p.pid} (${p.comm}), ${p.threads.length} thread${p.threads.length === 1 ? '' : 's'}${p.exe ? `, ${p.exe}` : ''}`
    if (p.runtime) yield `  runtime ${p.runtime.name}${p.runtime.version ? ` ${p.runtime.version}` : ''} (${p.runtime.file})`
    if (p.runtimeError) yield `  (${p.runtimeError})`
    for (const t of p.threads) {
      yield `  thread ${t.tid}${t.name ? ` "${t.name}"` : ''}${t.state ? ` [${t.state}]` : ''}:`
      // The language's frames first: they are what the service's engineer reads; the native ones follow.
      for (const [i, f] of (t.runtimeFrames ?? []).entries())
        yield `    ${p.runtime?.name ?? 'runtime'} #${i}  ${f.function ?? '??'}${whereIn(f)}`
      for (const [i, f] of t.frames.entries()) {
        const where = f.file ? ` at ${f.file}${f.line ? `:${f.line}` : ''}` : f.library ? ` from ${f.library}` : ''
        yield `    #${i}  ${f.pc} in ${f.function ?? '??'} ()${where}`
      }
    }
    for (const g of p.goroutines ?? []) {
      yield `  goroutine ${g.id}${g.state ? ` [${g.state}]` : ''}${g.thread !== null ? ` on thread ${g.thread}` : ''}:`
      for (const [i, f] of g.frames.entries()) yield `    go #${i}  ${f.function ?? '??'}${whereIn(f)}`
    }
    if (p.goroutinesOmitted) yield `  (${p.goroutinesOmitted} more goroutines not shown)`
  }
}

/** " at FILE:LINE", or " line LINE" for a frame that names no file (Java's, as jstack gives them). */
function whereIn(f: RuntimeFrame): string {
  if (f.file) return ` at ${f.file}${f.line !== null ? `:${f.line}` : ''}`
  return f.line !== null ? ` line ${f.line}` : ''
}

export const STACKS_LANGUAGES = ['python', 'java', 'go', 'native'] as const
export type StacksLanguage = (typeof STACKS_LANGUAGES)[number]

/** The stacks of one kind: a language's frames alone, of the processes that run it (Go's as goroutines), or the
 *  native frames alone, of every process. */
export function onlyLanguage(all: ProcessStacks[], lang: StacksLanguage): ProcessStacks[] {
  if (lang === 'native')
    return all.map(({ goroutines: _g, goroutinesOmitted: _o, ...p }) => ({ ...p, threads: p.threads.map(({ runtimeFrames: _f, ...t }) => t) }))
  return all
    .filter((p) => p.runtime?.name === lang)
    .map((p) => ({ ...p, threads: lang === 'go' ? [] : p.threads.map((t) => ({ ...t, frames: [] })) }))
}
