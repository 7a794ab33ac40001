// A JVM's Java threads from a core, as jstack prints them: each thread's name, state and frames (class.method and
// line), read by the serviceability agent of the JDK the process ran (`jhsdb jstack --core CORE --exe JAVA`, beside
// its java in JAVA_HOME/bin: the agent reads the VM's structures, so it must be the same build). It works on the
// cores snap rebuilds from the images.

import { existsSync, lstatSync, mkdirSync, readdirSync, statSync, symlinkSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { readBoundedRegularFile } from '../../bundle/bounded-read.js'
import { runTool } from '../../tools/run.js'
import type { RuntimeFrame } from './python.js'

export interface JavaThread {
  /** The OS thread (jstack's nid). */
  tid: number
  name: string
  /** java.lang.Thread.State as jstack prints it ("WAITING (on object monitor)"); null when it prints none. */
  state: string | null
  /** Innermost first: function is "package.Class.method", line where the class has line numbers. */
  frames: RuntimeFrame[]
}

export const MAX_JAVA_FRAMES = 256
const MAX_JSTACK_OUTPUT = 64 << 20

/** jhsdb of the JDK whose java is `exe` (its own bin directory), or undefined when that JDK has none (a JRE). */
export function jhsdbBeside(exe: string): string | undefined {
  const p = join(dirname(exe), 'jhsdb')
  try {
    return statSync(p).isFile() ? p : undefined
  } catch {
    return undefined
  }
}

/** Every Java thread of the JVM in `core`; `workDir` takes jhsdb's log. */
export async function javaThreadsFromCore(o: {
  jhsdb: string
  exe: string
  core: string
  pid: number
  workDir: string
  timeoutMs: number
  cancel?: AbortSignal
  /** Where the JVM's libraries are, by their own paths, when not at them (a bundle's binaries). */
  altRoot?: string
}): Promise<JavaThread[]> {
  const log = join(o.workDir, `jstack-${o.pid}.log`)
  const run = await runTool(o.jhsdb, ['jstack', '--core', o.core, '--exe', o.exe], {
    timeoutMs: o.timeoutMs,
    cancel: o.cancel,
    logFile: log,
    ...(o.altRoot ? { env: { SA_ALTROOT: o.altRoot } } : {}),
  })
  if (!existsSync(log)) throw new Error(`jhsdb wrote nothing (${run.timedOut ? 'timed out' : `exit ${run.exitCode}`})`)
  const text = readBoundedRegularFile(log, MAX_JSTACK_OUTPUT).toString('utf8')
  const threads = parseJstack(text)
  if (threads.length === 0) {
    const last = text.trim().split('\n').at(-1) ?? ''
    throw new Error(`jhsdb found no Java thread (${run.timedOut ? 'timed out' : `exit ${run.exitCode}`}: ${last.slice(0, 300)})`)
  }
  return threads
}

const HEADER = /^"(.*)" #\d+ .*\bnid=0x([0-9a-f]+)\b/
const STATE = /^\s+java\.lang\.Thread\.State: (.+?)\s*$/
const FRAME = /^ - ([^(\s]+)\(.*\) @bci=-?\d+(?:, line=(\d+))?/

/** jhsdb jstack's listing: a quoted name and nid per thread, its state, then " - class.method(args) @bci=N, line=L". */
export function parseJstack(text: string): JavaThread[] {
  const threads: JavaThread[] = []
  let current: JavaThread | undefined
  for (const line of text.split('\n')) {
    const h = HEADER.exec(line)
    if (h) {
      current = { tid: parseInt(h[2]!, 16), name: h[1]!, state: null, frames: [] }
      threads.push(current)
      continue
    }
    if (!current) continue
    const s = STATE.exec(line)
    if (s) {
      current.state = s[1]!
      continue
    }
    const f = FRAME.exec(line)
    if (f && current.frames.length < MAX_JAVA_FRAMES) current.frames.push({ function: f[1]!, file: null, line: f[2] ? Number(f[2]) : null })
  }
  return threads
}

/**
 * A bundle carries each library by its own file name (libstdc++.so.6.0.30), the core's link map names it as the
 * loader found it (libstdc++.so.6), and jhsdb looks it up under SA_ALTROOT by that name alone: each versioned
 * library of `root` gets the shorter names as links beside it, where none is there.
 */
export function linkLibraryNames(root: string): void {
  const byName = new Map<string, string>()
  const walk = (dir: string, depth: number) => {
    if (depth > 12) return
    let names: string[]
    try {
      names = readdirSync(dir)
    } catch {
      return
    }
    for (const n of names) {
      const p = join(dir, n)
      const st = lstatSync(p)
      if (st.isDirectory()) walk(p, depth + 1)
      else if (st.isFile()) {
        if (!byName.has(n)) byName.set(n, p)
        const m = /^(.+\.so)((?:\.\d+)+)$/.exec(n)
        if (!m) continue
        const parts = m[2]!.split('.').slice(1)
        for (let k = 1; k < parts.length; k++) {
          const short = join(dir, `${m[1]}.${parts.slice(0, k).join('.')}`)
          if (!existsSync(short)) symlinkSync(n, short)
        }
      }
    }
  }
  walk(root, 0)
  // The loader, as executables name it (/lib64/ld-linux-x86-64.so.2), carried by its own path under usr/lib.
  const loader = join(root, 'lib64', 'ld-linux-x86-64.so.2')
  const found = byName.get('ld-linux-x86-64.so.2')
  if (found && !existsSync(loader)) {
    mkdirSync(dirname(loader), { recursive: true, mode: 0o700 })
    symlinkSync(found, loader)
  }
}
