// The stacks as people read them (stacks.txt, `procsnap stacks`): gdb's own backtrace shape, identical workers of a
// pool shown once with their count, and one language's frames when asked.

import type { RuntimeFrame } from './runtimes/python.js'
import type { ProcessStacks } from './stacks-model.js'

/** The stacks as people read them, in the shape of gdb's own backtrace. */
export function renderStacks(all: ProcessStacks[]): string {
  return [...stacksLines(all)].join('\n')
}

/** The same, a line at a time. Processes whose stacks are the same (identical workers of a pool) are shown once,
 *  with their count and pids. */
export function* stacksLines(all: ProcessStacks[]): Generator<string> {
  for (const group of identicalStacks(all)) {
    const p = group[0]!
    const threads = `${p.threads.length} thread${p.threads.length === 1 ? '' : 's'}`
    if (group.length === 1) yield `process ${p.pid} (${p.comm}), ${threads}${p.exe ? `, ${p.exe}` : ''}`
    else yield `${group.length} processes: ${compactPids(group.map((q) => q.pid))} (${p.comm}), ${threads} each${p.exe ? `, ${p.exe}` : ''}`
    if (p.runtime) yield `  runtime ${p.runtime.name}${p.runtime.version ? ` ${p.runtime.version}` : ''} (${p.runtime.file})`
    if (p.runtimeError) yield `  (${p.runtimeError})`
    for (const [n, t] of p.threads.entries()) {
      const which = group.length === 1 ? `thread ${t.tid}` : `thread ${n + 1} of each${n === 0 ? ' (the main thread)' : ''}`
      yield `  ${which}${t.name ? ` "${t.name}"` : ''}${t.state ? ` [${t.state}]` : ''}:`
      // The language's frames first: they are what the service's engineer reads; the native ones follow.
      for (const [i, f] of (t.runtimeFrames ?? []).entries())
        yield `    ${p.runtime?.name ?? 'runtime'} #${i}  ${f.function ?? '??'}${whereIn(f)}`
      for (const [i, f] of t.frames.entries()) {
        const where = f.file ? ` at ${f.file}${f.line ? `:${f.line}` : ''}` : f.library ? ` from ${f.library}` : ''
        // Processes started apart have their libraries at other addresses: a pc they do not share is left out.
        const samePc = group.every((q) => q.threads[n]?.frames[i]?.pc === f.pc)
        yield `    #${i}  ${samePc ? `${f.pc} in ` : ''}${f.function ?? '??'} ()${where}`
      }
    }
    for (const g of p.goroutines ?? []) {
      yield `  goroutine ${g.id}${g.state ? ` [${g.state}]` : ''}${g.thread !== null ? ` on thread ${g.thread}` : ''}:`
      for (const [i, f] of g.frames.entries()) yield `    go #${i}  ${f.function ?? '??'}${whereIn(f)}`
    }
    if (p.goroutinesOmitted) yield `  (${p.goroutinesOmitted} more goroutines not shown)`
  }
}

/** The processes in groups of the same stacks, in the order of each group's first process: the same program, the
 *  same runtime, and thread by thread the same names, states and frames (by function, file, line and library; by pc
 *  for a frame gdb could not name). Thread ids and pcs of named frames are left out of the comparison. */
export function identicalStacks(all: ProcessStacks[]): ProcessStacks[][] {
  const groups = new Map<string, ProcessStacks[]>()
  for (const p of all) {
    const key = JSON.stringify([
      p.comm, p.exe, p.runtime ?? null, p.runtimeError ?? null, p.goroutinesOmitted ?? 0,
      p.threads.map((t) => [t.name ?? null, t.state ?? null, t.runtimeFrames ?? [], t.frames.map((f) => (f.function === null ? [f.pc, f.library] : [f.function, f.file, f.line, f.library]))]),
      (p.goroutines ?? []).map((g) => [g.id, g.state, g.thread, g.frames]),
    ])
    const g = groups.get(key)
    if (g) g.push(p)
    else groups.set(key, [p])
  }
  return [...groups.values()]
}

/** Pids in order, runs of consecutive ones as ranges: "1201-1290, 1295, 1297-1302". */
export function compactPids(pids: number[]): string {
  const sorted = [...pids].sort((a, b) => a - b)
  const parts: string[] = []
  for (let i = 0; i < sorted.length; ) {
    let j = i
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++
    parts.push(j === i ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`)
    i = j + 1
  }
  return parts.join(', ')
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
