// Stage 2: every process of the tree to a verified stop. Running ones get SIGSTOP; ones found stopped (by Ctrl+Z,
// say) are sent nothing here: their stop is converted to a SIGSTOP stop while criu holds them (stopConversionScript).

import type { Manifest } from '../../bundle/manifest.js'
import { membersNotStopped, restopMembers, stopTree } from '../../process/tree.js'
import { round } from '../../tools/run.js'
import { STOP_TIMEOUT_MS, type DumpState } from './state.js'

export async function freezeTree(s: DumpState, report: (d: string) => void): Promise<void> {
  await s.timed('stop', async (rec) => {
    s.budget.checkCancelled('stopping the tree')
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
    rec.note = normalizationRecord(s).note
    report(rec.note)
  })
}

export function normalizationRecord(s: DumpState): Manifest['normalization'] {
  const threads = s.members.reduce((n, m) => n + m.threadsAtStop.length, 0)
  const found = s.members.filter((m) => m.found === 'stopped').length
  if (!s.touched) return { action: 'sigstop', conversionWindowUs: null, settleMs: 0, note: 'not stopped' }
  const procs = `${s.members.length} process${s.members.length === 1 ? '' : 'es'}, ${threads} threads`
  const root = s.members[0]
  const action = root?.found === 'stopped' ? 'converted' : 'sigstop'
  const parts = [
    found < s.members.length ? `${s.members.length - found} running process(es) stopped with SIGSTOP` : '',
    found > 0
      ? `${found} already stopped (by an unknown stop signal, e.g. SIGTSTP from Ctrl+Z): ` +
        (s.o.coreOnly
          ? 'left as they were'
          : s.stopConverted
            ? 'converted to a SIGSTOP stop with SIGCONT+SIGSTOP while criu held every thread, so no thread ran'
            : 'to be converted to a SIGSTOP stop while criu holds every thread')
      : '',
  ].filter(Boolean)
  // The conversion leaves the target no window to run in: there is none to record.
  return { action, conversionWindowUs: null, settleMs: round(s.stopSettleMs), note: `${parts.join('; ')}; all ${procs} seen stopped after ${s.stopSettleMs.toFixed(1)} ms` }
}

/** After a tool detaches, every thread of every process must still be stopped; if not, stop it again and say so. */
export async function recheckStopped(s: DumpState, after: string): Promise<void> {
  const late = membersNotStopped(s.members)
  if (late.length === 0) return
  const what = late.map((l) => `${l.member.id.pid}: ${l.threads.map((t) => `${t.tid}:${t.state}`).join(' ')}`).join(', ')
  s.warn(`after ${after}, threads of ${late.length} process(es) were not stopped (${what}); stopped again with SIGSTOP`)
  await restopMembers(late.map((l) => l.member), s.budget.remainingMs(STOP_TIMEOUT_MS))
}
