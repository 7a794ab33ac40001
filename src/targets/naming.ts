// How a target was named, and what every way of naming one resolves to: the root of a tree, and a record of how it
// was found that the manifest keeps (a bundle taken by name says which name, and which process that name meant).

import type { TargetNamingRecord } from '../bundle/manifest.js'

export type TargetKind = TargetNamingRecord['by']

/** What the person gave: one of these per dump or watch. */
export type TargetSpec =
  | { kind: 'pid'; pid: number }
  | { kind: 'name'; name: string }
  | { kind: 'pidfile'; path: string }
  | { kind: 'cgroup'; path: string }
  | { kind: 'unit'; unit: string }
  | { kind: 'container'; id: string; runcRoot?: string }

/** Recorded in the manifest (targetNaming): how the target was named and how that name became this pid. */
export type TargetNaming = TargetNamingRecord

export interface ResolvedTarget {
  pid: number
  naming: TargetNaming
}

/** One process as a resolver sees it: enough to tell roots from workers and to name each in a refusal. */
export interface ProcessEntry {
  pid: number
  ppid: number
  comm: string
  /** The command line, arguments joined by spaces (empty for a kernel thread). */
  cmdline: string
  state: string
  startTime: number
}

/** "4242 (nginx: master process /usr/sbin/nginx)": how a refusal names a process. */
export function describeEntry(p: ProcessEntry): string {
  // One line whatever the command line holds (a python -c program spans several).
  const flat = p.cmdline.replace(/[\s\p{Cc}]+/gu, ' ').trim()
  const line = flat.length > 120 ? `${flat.slice(0, 117)}...` : flat
  return `${p.pid} (${line || `[${p.comm}]`})`
}
