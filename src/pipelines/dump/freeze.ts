// Stage 2: every process of the tree to a verified stop. Running ones get SIGSTOP; ones found stopped (by Ctrl+Z,
// say) are sent nothing here: their stop is converted to a SIGSTOP stop while criu holds them (stopConversionScript).
// A stop criu cannot seize at all (SIGTTIN, SIGTTOU) is converted first, the same way, with snap holding the threads.

import type { Manifest } from '../../bundle/manifest.js'
import { TargetRefusedError } from '../../errors.js'
import { convertUnseizableStops, CRIU_SEIZABLE_STOPS, stopSignalName, stopSignalOf, type StopConversion } from '../../process/job-stop.js'
import { membersNotStopped, restopMembers, stopTree } from '../../process/tree.js'
import { round } from '../../tools/run.js'
import { recordThreadSignals } from '../../tools/thread-leftovers.js'
import { STOP_TIMEOUT_MS, type DumpState } from './state.js'

/**
 * The processes found stopped by a signal criu cannot seize (compel takes SIGSTOP and SIGTSTP stops only) get a
 * SIGSTOP stop before criu starts, every thread held while SIGCONT and SIGSTOP are sent, so none runs. Where /proc
 * does not say the signal, the helper reads it under ptrace and leaves a SIGSTOP or SIGTSTP stop as it is. When it
 * cannot hold the threads, nothing was sent: the dump is refused (exit 4), naming the signal.
 */
async function convertUnseizable(s: DumpState): Promise<void> {
  const stopped = s.members.filter((m) => m.found === 'stopped')
  for (const m of stopped) m.stopSignal = stopSignalOf(m.id.pid)
  // Without criu (--core-only) a stop stays as it was found, whatever the signal.
  if (s.o.coreOnly) return
  const unseizable = stopped.filter((m) => m.stopSignal === undefined || !CRIU_SEIZABLE_STOPS.has(m.stopSignal))
  if (unseizable.length === 0) return
  let done: StopConversion[]
  try {
    done = await convertUnseizableStops(unseizable.map((m) => m.id.pid))
  } catch (e) {
    const named = unseizable.filter((m) => m.stopSignal !== undefined)
    const m = named[0] ?? unseizable[0]!
    const by = m.stopSignal !== undefined ? `by ${stopSignalName(m.stopSignal)}, a stop criu cannot checkpoint` : 'by a signal /proc does not name'
    throw new TargetRefusedError(
      `process ${m.id.pid} (${m.comm}) is stopped ${by}, and snap could not turn it into a SIGSTOP stop: ${(e as Error).message}`,
      `nothing was sent to it; \`snap dump --core-only\` takes the cores without a checkpoint, or resume it (\`kill -CONT ${m.id.pid}\`) and dump it running`,
    )
  }
  // The signal found is what the manifest names (the stop is a SIGSTOP one now).
  for (const c of done) {
    const m = unseizable.find((x) => x.id.pid === c.pid)
    if (m) m.stopSignal = c.signo
  }
}

export async function freezeTree(s: DumpState, report: (d: string) => void): Promise<void> {
  await s.timed('stop', async (rec) => {
    s.budget.checkCancelled('stopping the tree')
    // Before the freeze starts: a process found stopped is not kept waiting by it, and the rest of the tree still runs.
    await convertUnseizable(s)
    s.freezeStart = performance.now()
    s.touched = true
    s.journal?.update({ touched: true })
    // A process born while the tree is being stopped is locked before it is sent anything; one that another snap
    // holds fails this dump, whose rollback puts back what it stopped.
    const stopped = await stopTree(s.members, s.budget.remainingMs(STOP_TIMEOUT_MS), () => s.o.cancel.aborted, (fresh) =>
      s.journal?.lockProcesses(fresh.map((m) => m.id)),
    )
    s.budget.checkCancelled('stopping the tree')
    s.stopSettleMs = stopped.settleMs
    s.bornDuringStop = stopped.bornDuringStop
    if (stopped.bornDuringStop.length > 0) {
      s.warn(`${stopped.bornDuringStop.length} process(es) were born while the tree was being stopped (${stopped.bornDuringStop.join(', ')}); stopped too`)
      s.journal?.update({ members: s.members.map((m) => ({ id: m.id, restoreTo: m.found })) })
    }
    s.target.treePids = s.members.map((m) => m.id.pid)
    if (!s.o.coreOnly) {
      // What criu's parasite changes in a thread and cannot always put back, as the stop left it: read now, the tree
      // still, and written with the journal's next update, before criu's gate opens.
      s.threadSignals = recordThreadSignals(s.target.treePids)
      s.journal?.note({ threadSignals: s.threadSignals })
    }
    rec.note = normalizationRecord(s).note
    report(rec.note)
  })
}

export function normalizationRecord(s: DumpState): Manifest['normalization'] {
  const threads = s.members.reduce((n, m) => n + m.threadsAtStop.length, 0)
  const found = s.members.filter((m) => m.found === 'stopped').length
  if (!s.touched) return { action: 'sigstop', conversionWindowUs: null, settleMs: 0, note: 'not stopped' }
  const procs = `${s.members.length} process${s.members.length === 1 ? '' : 'es'}, ${threads} thread${threads === 1 ? '' : 's'}`
  const root = s.members[0]
  const action = root?.found === 'stopped' ? 'converted' : 'sigstop'
  const parts = [
    found < s.members.length ? `${s.members.length - found} running process${s.members.length - found === 1 ? '' : 'es'} stopped with SIGSTOP` : '',
    found > 0
      ? `${found} already stopped (${stoppedBy(s)}): ` +
        (s.o.coreOnly
          ? 'left as they were'
          : s.stopConverted
            ? `converted to a SIGSTOP stop with SIGCONT+SIGSTOP while criu held every thread${heldBefore(s)}, so no thread ran`
            : `to be converted to a SIGSTOP stop while criu holds every thread${heldBefore(s)}`)
      : '',
  ].filter(Boolean)
  // The conversion leaves the target no window to run in: there is none to record.
  return { action, conversionWindowUs: null, settleMs: round(s.stopSettleMs), note: `${parts.join('; ')}; all ${procs} seen stopped after ${s.stopSettleMs.toFixed(1)} ms` }
}

/** What stopped the processes found stopped, as far as it is known. */
function stoppedBy(s: DumpState): string {
  const known = [...new Set(s.members.filter((m) => m.found === 'stopped' && m.stopSignal !== undefined).map((m) => m.stopSignal!))]
  const unknown = s.members.some((m) => m.found === 'stopped' && m.stopSignal === undefined)
  if (known.length === 0) return 'by an unknown stop signal, e.g. SIGTSTP from Ctrl+Z'
  return `by ${known.map(stopSignalName).join(', ')}${unknown ? ' and a signal /proc does not name' : ''}`
}

/** The stops criu cannot seize were converted once already, before it started, with snap holding the threads. */
function heldBefore(s: DumpState): string {
  const early = [...new Set(s.members.filter((m) => m.found === 'stopped' && m.stopSignal !== undefined && !CRIU_SEIZABLE_STOPS.has(m.stopSignal)).map((m) => m.stopSignal!))]
  return early.length > 0 ? ` (a ${early.map(stopSignalName).join(' or ')} stop, which criu cannot seize, was converted the same way before it started)` : ''
}

/** After a tool detaches, every thread of every process must still be stopped; if not, stop it again and say so. */
export async function recheckStopped(s: DumpState, after: string): Promise<void> {
  const late = membersNotStopped(s.members)
  if (late.length === 0) return
  const what = late.map((l) => `${l.member.id.pid}: ${l.threads.map((t) => `${t.tid}:${t.state}`).join(' ')}`).join(', ')
  s.warn(`after ${after}, threads of ${late.length} process(es) were not stopped (${what}); stopped again with SIGSTOP`)
  await restopMembers(late.map((l) => l.member), s.budget.remainingMs(STOP_TIMEOUT_MS))
}
