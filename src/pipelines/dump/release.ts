// Stage 5: every process of the tree back in its own state, each confirmed in /proc: running ones resumed, paused
// ones still paused (or all as --leave says). Killing, if asked, is criu's at the end of its dump when the cores come
// from the images (DumpState.criuKills), else it waits until the bundle is sealed.

import { putTreeBack } from '../../process/tree.js'
import { markExited } from '../../criu-images/pstree.js'
import { readDumpedThreadCreds } from './seal.js'
import { round } from '../../tools/run.js'
import { assertTreeIntact } from './outcome.js'
import { STOP_TIMEOUT_MS, type DumpState } from './state.js'

/** What finishing a capture may take once the target is back: minutes, and more for more memory. */
const AFTER_RELEASE_BASE_MS = 10 * 60_000
const AFTER_RELEASE_MS_PER_GIB = 5 * 60_000

export async function releaseTree(s: DumpState, report: (d: string) => void): Promise<void> {
  await s.timed('final-state', async (rec) => {
    // The zombies criu dumped are recorded as exited (seal), read now: the images go once the bundle is sealed.
    if (s.dumped) markExited(s.imagesDir, s.dumped)
    if (s.killedByCriu) s.outcomes = s.members.map((m) => ({ pid: m.id.pid, comm: m.comm, found: m.found, left: 'gone' }))
    else {
      assertTreeIntact(s, 'the capture')
      s.outcomes = await putTreeBack(s.members, (m) => s.leaveFor(m), s.budget.remainingMs(STOP_TIMEOUT_MS))
    }
    s.released = true
    // The images go into the bundle (and away) from here on: every thread's credentials are read from them now.
    if (s.dumped) readDumpedThreadCreds(s)
    // The target is back: the rest (cores, stacks, seal) is bounded by its own deadline, not by --timeout.
    s.budget.extendAfterRelease(AFTER_RELEASE_BASE_MS + AFTER_RELEASE_MS_PER_GIB * ((s.target.vmRssKiB ?? 0) * s.members.length) / (1024 * 1024))
    s.freezeWindowMs = round(performance.now() - (s.freezeStart ?? performance.now()))
    if (!s.killedByCriu) assertTreeIntact(s, 'putting the tree back', true)
    s.journal?.update({ step: 'seal', restoreTo: s.leaveFor(s.members[0]!), members: s.members.map((m) => ({ id: m.id, restoreTo: s.leaveFor(m) })) })
    const running = s.outcomes.filter((x) => x.left === 'running').length
    const stopped = s.outcomes.filter((x) => x.left === 'stopped').length
    rec.note = s.killedByCriu
      ? `${s.members.length} process(es) ended by criu at the end of its dump, as --leave killed asked; freeze window ${s.freezeWindowMs.toFixed(1)} ms`
      : `${running} process(es) running, ${stopped} stopped${s.finalState === 'killed' ? ' (to be killed after sealing)' : ''}; ` +
        `freeze window ${s.freezeWindowMs.toFixed(1)} ms`
    report(rec.note)
  })
}
