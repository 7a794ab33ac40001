// Every thread's backtrace from a core, as gdb unwinds it: the first thing an engineer reads of a capture. gdb runs
// in batch mode on the core with the process's executable, and its Python writes the frames as JSON to a file (its
// printed output is for people and changes between versions).

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { readJsonFile } from '../bundle/bounded-read.js'
import { array, int, object, string, type ArrayShape, type ObjectShape } from '../bundle/json-stream.js'
import { runTool } from '../tools/run.js'

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
}

export interface ProcessStacks {
  pid: number
  comm: string
  exe: string | null
  threads: ThreadStack[]
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
const threadShape = object({ tid: int(0, 2 ** 31 - 1), frames: array(frameShape, MAX_FRAMES, { maxWhy: 'the frames snap unwinds' }) })

/** A process's threads, as gdb's script writes them; at most `maxThreads`. */
export const threadsShape = (maxThreads: number, maxWhy?: string): ArrayShape => array(threadShape, maxThreads, { maxWhy })

/** One process's stacks, as stacks.json holds them; at most `maxThreads` threads. */
export const processStacksShape = (maxThreads: number, maxWhy?: string): ObjectShape =>
  object({ pid: int(0, 2 ** 31 - 1), comm: string(256), exe: string(8192, { nullable: true }), threads: threadsShape(maxThreads, maxWhy) })

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
  pid: number
  comm: string
  workDir: string
  timeoutMs: number
  cancel?: AbortSignal
}): Promise<ProcessStacks> {
  const script = join(o.workDir, `stacks-${o.pid}.py`)
  const output = join(o.workDir, `stacks-${o.pid}.json`)
  writeFileSync(script, SCRIPT, { mode: 0o600 })
  const run = await runTool(
    o.gdb,
    [
      '--nx', '--batch', '--quiet',
      '-iex', 'set debuginfod enabled off',
      '-iex', 'set auto-load no',
      ...(o.fileArgs ?? []),
      '-ex', `python STACKS_OUT = ${JSON.stringify(output)}`,
      '-x', script,
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
  return { pid: o.pid, comm: o.comm, exe: o.exe ?? null, threads }
}

/** The stacks as people read them, in the shape of gdb's own backtrace. */
export function renderStacks(all: ProcessStacks[]): string {
  return [...stacksLines(all)].join('\n')
}

/** The same, a line at a time. */
export function* stacksLines(all: ProcessStacks[]): Generator<string> {
  for (const p of all) {
    yield `process ${p.pid} (${p.comm}), ${p.threads.length} thread${p.threads.length === 1 ? '' : 's'}${p.exe ? `, ${p.exe}` : ''}`
    for (const t of p.threads) {
      yield `  thread ${t.tid}:`
      for (const [i, f] of t.frames.entries()) {
        const where = f.file ? ` at ${f.file}${f.line ? `:${f.line}` : ''}` : f.library ? ` from ${f.library}` : ''
        yield `    #${i}  ${f.pc} in ${f.function ?? '??'} ()${where}`
      }
    }
  }
}
