// A tool that holds the tree (criu seized it, gdb attached to it) is never killed while it does: killed then, it can
// take a process down. Measured: criu killed at one of its ptrace calls in eight, the target died (criu's parasite
// code left inside); Ctrl+C 37 ms into --core gcore killed a 64 MiB worker once, gdb killed in its attach. So Ctrl+C,
// SIGTERM, SIGHUP and a deadline stop a tool only once no process of the tree is traced by it, or once this wait's
// own deadline has passed too; the terminal says what snap is waiting for.

import { pollUntil } from '../../process/poll.js'
import { tracerGroup } from '../../process/proc.js'
import type { DumpState } from './state.js'

/** A tool holds the tree while it dumps or copies memory: allow that, and more for more memory, before killing it. */
export function letGoTimeoutMs(rssKiB: number): number {
  return Math.round(30_000 + 30_000 * (rssKiB / (1024 * 1024)))
}

/** Pids of the tree that a process of the tool's group traces now (a tool leads its own process group). */
function heldBy(s: DumpState, toolPid: number): number[] {
  return s.members.filter((m) => tracerGroup(m.id.pid) === toolPid).map((m) => m.id.pid)
}

/** Whether the tool traces any process of the tree now. */
export function holdsTree(s: DumpState, toolPid: number | undefined): boolean {
  return toolPid !== undefined && heldBy(s, toolPid).length > 0
}

export async function waitForToolToLetGo(s: DumpState, tool: 'criu' | 'gdb', toolPid: number | undefined, timeoutMs: number): Promise<void> {
  if (toolPid === undefined) return
  const held = heldBy(s, toolPid)
  if (held.length === 0) return
  s.progress.note(
    `waiting for ${tool} to let go of the tree (${held.length} process${held.length === 1 ? '' : 'es'} held, at most ${Math.round(timeoutMs / 1000)} s): killed while it holds them, ${tool} can take a process down`,
  )
  const free = await pollUntil(() => heldBy(s, toolPid).length === 0, { timeoutMs, maxIntervalMs: 5 })
  if (!free) s.progress.warn(`${tool} still held the tree after ${Math.round(timeoutMs / 1000)} s; stopping it anyway`)
}
