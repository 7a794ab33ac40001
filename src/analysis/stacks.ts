// Every thread's backtrace from a core, as gdb unwinds it: the first thing an engineer reads of a capture. gdb runs
// in batch mode on the core with the process's executable, and its Python writes the frames as JSON to a file (its
// printed output is for people and changes between versions).

import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
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
const MAX_FRAMES = 256

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
    threads = JSON.parse(readFileSync(output, 'utf8')) as ThreadStack[]
  } catch {
    throw new Error(`gdb wrote no stacks (${run.timedOut ? 'timed out' : `exit ${run.exitCode}`})`)
  }
  if (!Array.isArray(threads) || threads.length === 0) throw new Error('gdb found no thread in the core')
  return { pid: o.pid, comm: o.comm, exe: o.exe ?? null, threads }
}

/** The stacks as people read them, in the shape of gdb's own backtrace. */
export function renderStacks(all: ProcessStacks[]): string {
  const lines: string[] = []
  for (const p of all) {
    lines.push(`process ${p.pid} (${p.comm}), ${p.threads.length} thread${p.threads.length === 1 ? '' : 's'}${p.exe ? `, ${p.exe}` : ''}`)
    for (const t of p.threads) {
      lines.push(`  thread ${t.tid}:`)
      t.frames.forEach((f, i) => {
        const where = f.file ? ` at ${f.file}${f.line ? `:${f.line}` : ''}` : f.library ? ` from ${f.library}` : ''
        lines.push(`    #${i}  ${f.pc} in ${f.function ?? '??'} ()${where}`)
      })
    }
  }
  return lines.join('\n')
}
