// --name NAME: a process's comm (what ps -o comm and pgrep show, at most 15 characters), or a regular expression over
// its command line. Exactly one tree root may match; a master's workers match too, and are part of its tree.

import { AmbiguousTargetError, NoSuchTargetError, UsageError } from '../errors.js'
import { describeEntry, type ProcessEntry, type ResolvedTarget } from './naming.js'
import { treeRoots } from './roots.js'

/** The kernel keeps 15 bytes of a comm (TASK_COMM_LEN 16 with its NUL). */
const COMM_LENGTH = 15

export interface NameMatcher {
  /** Whether the process matches, and how (for the record). */
  match(p: ProcessEntry): 'comm' | 'cmdline pattern' | undefined
}

/** A name is a comm when it equals one (a longer name is compared by its first 15 characters, as the kernel keeps
 *  them), else a pattern over the command line. A name that is no valid regular expression is matched as a comm only. */
export function nameMatcher(name: string): NameMatcher {
  if (name === '') throw new UsageError('--name is empty', 'give a process name (as `ps -o comm` shows it) or a regular expression over its command line')
  let pattern: RegExp | undefined
  try {
    pattern = new RegExp(name)
  } catch {
    pattern = undefined
  }
  const comm = name.slice(0, COMM_LENGTH)
  return {
    match: (p) => (p.comm === comm ? 'comm' : pattern && p.cmdline !== '' && pattern.test(p.cmdline) ? 'cmdline pattern' : undefined),
  }
}

/**
 * The one tree root NAME names among `table`. `exclude` holds processes that are never the target (snap itself and
 * its ancestors, whose command lines hold the name). Zombies and kernel threads (no command line) never match.
 */
export function resolveName(name: string, table: ProcessEntry[], exclude: Set<number>): ResolvedTarget {
  const matcher = nameMatcher(name)
  const how = new Map<number, string>()
  const matches = table.filter((p) => {
    if (exclude.has(p.pid) || p.state === 'Z' || p.state === 'X' || p.cmdline === '') return false
    const m = matcher.match(p)
    if (m) how.set(p.pid, m)
    return m !== undefined
  })
  if (matches.length === 0)
    throw new NoSuchTargetError(`no process is named '${name}' (comm) or has a command line matching it`, 'check with `pgrep -a NAME`, or give the pid')
  const roots = treeRoots(matches, table)
  if (roots.length > 1) throw ambiguous(`--name '${name}'`, roots)
  const root = roots[0]!
  return { pid: root.pid, naming: { by: 'name', value: name, via: how.get(root.pid)!, pid: root.pid } }
}

/** The refusal when a name means more than one tree: every root, with its pid and command line. */
export function ambiguous(what: string, roots: ProcessEntry[]): AmbiguousTargetError {
  const shown = roots.slice(0, 10).map(describeEntry).join(', ')
  const more = roots.length > 10 ? ` and ${roots.length - 10} more` : ''
  return new AmbiguousTargetError(
    `${what} matches ${roots.length} separate process trees: ${shown}${more}`,
    roots.map((r) => r.pid),
    'give a narrower --name (a pattern over the command line), or the pid',
  )
}
