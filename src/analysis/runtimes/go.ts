// Go's goroutines from a core, each with its state and frames, as delve reads them (`dlv core EXE CORE`, Debian's
// delve): goroutines are what Go engineers think in, and the OS threads' native frames show only the scheduler.
// delve's printed listing is parsed; it works on the cores snap rebuilds from the images.

import { existsSync, statSync, writeFileSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import { readBoundedRegularFile } from '../../bundle/bounded-read.js'
import { runTool } from '../../tools/run.js'
import type { RuntimeFrame } from './python.js'

export interface Goroutine {
  id: number
  /** Why it waits ("IO wait", "chan receive", "select (no cases)"), or "running" on a thread; null when delve says
   *  neither. */
  state: string | null
  /** The OS thread it runs on, when it does. */
  thread: number | null
  frames: RuntimeFrame[]
}

/** Frames delve is asked for, each goroutine; and goroutines kept: a leak of a million is shown by its first ones. */
export const MAX_GOROUTINE_FRAMES = 64
export const MAX_GOROUTINES = 10_000
const MAX_DLV_OUTPUT = 64 << 20

/** delve where Debian puts it (or on PATH); undefined when it is not installed. */
export function findDelve(): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), '/usr/bin', '/usr/local/bin']) {
    const p = join(dir, 'dlv')
    try {
      if (statSync(p).isFile()) return p
    } catch {
      // not here
    }
  }
  return undefined
}

/** Every goroutine of the Go program `exe` in `core`, through delve; `workDir` takes its command file and log. */
export async function goroutinesFromCore(o: { dlv: string; exe: string; core: string; pid: number; workDir: string; timeoutMs: number; cancel?: AbortSignal }): Promise<{ goroutines: Goroutine[]; more: number }> {
  const commands = join(o.workDir, `goroutines-${o.pid}.dlv`)
  const log = join(o.workDir, `goroutines-${o.pid}.log`)
  writeFileSync(commands, `goroutines -t ${MAX_GOROUTINE_FRAMES}\nexit\n`, { mode: 0o600 })
  const run = await runTool(o.dlv, ['core', o.exe, o.core, '--allow-non-terminal-interactive=true', '--init', commands], {
    timeoutMs: o.timeoutMs,
    cancel: o.cancel,
    logFile: log,
    env: { TERM: 'dumb', NO_COLOR: '1' },
  })
  if (!existsSync(log)) throw new Error(`delve wrote nothing (${run.timedOut ? 'timed out' : `exit ${run.exitCode}`})`)
  const parsed = parseGoroutines(readBoundedRegularFile(log, MAX_DLV_OUTPUT).toString('utf8'))
  if (parsed.goroutines.length === 0) {
    const last = readBoundedRegularFile(log, MAX_DLV_OUTPUT).toString('utf8').trim().split('\n').at(-1) ?? ''
    throw new Error(`delve found no goroutine (${run.timedOut ? 'timed out' : `exit ${run.exitCode}`}: ${last.slice(0, 300)})`)
  }
  return parsed
}

/** The first goroutines whose JSON (as stacks.json prints it, nested) fits in `maxBytes`. */
export function goroutinesWithin(all: Goroutine[], maxBytes: number): Goroutine[] {
  let used = 0
  const kept: Goroutine[] = []
  for (const g of all) {
    // Printed three levels deep in stacks.json: each of its lines indented by six more spaces than here.
    const text = JSON.stringify(g, null, 2)
    used += text.length + 6 * text.split('\n').length
    if (used > maxBytes) break
    kept.push(g)
  }
  return kept
}

const HEADER = /^\s*\*?\s*Goroutine (\d+) - [^:]+: .*?(?: \(thread (\d+)\))?(?: \[([^\]]+)\])?\s*$/
const FRAME = /^\s+\d+\s+0x[0-9a-f]+ in (.+?)\s*$/
const AT = /^\s+at (.+):(\d+)\s*$/

/** delve's `goroutines -t` listing: a header per goroutine, then its frames as "N  0xPC in FUNC" / "at FILE:LINE". */
export function parseGoroutines(text: string): { goroutines: Goroutine[]; more: number } {
  const goroutines: Goroutine[] = []
  let more = 0
  let current: Goroutine | undefined
  for (const line of text.split('\n')) {
    const h = HEADER.exec(line)
    if (h) {
      if (goroutines.length >= MAX_GOROUTINES) {
        more++
        current = undefined
        continue
      }
      const thread = h[2] ? Number(h[2]) : null
      current = { id: Number(h[1]), state: h[3] ?? (thread !== null ? 'running' : null), thread, frames: [] }
      goroutines.push(current)
      continue
    }
    if (!current) continue
    const f = FRAME.exec(line)
    if (f && current.frames.length < MAX_GOROUTINE_FRAMES) {
      current.frames.push({ function: f[1]!, file: null, line: null })
      continue
    }
    const at = AT.exec(line)
    const last = current.frames.at(-1)
    if (at && last && last.file === null) Object.assign(last, { file: at[1]!, line: Number(at[2]) })
  }
  return { goroutines, more }
}
