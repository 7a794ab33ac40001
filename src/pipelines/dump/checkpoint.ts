// Stage 3: criu dump of the whole tree, with the options the preflight chose for it. criu seizes the stopped tree,
// writes its images, and lets go, leaving every process stopped (it was stopped when seized) and, because its final
// state is "alive", the network unlocked: the live process keeps its connections.

import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { StepFailedError } from '../../errors.js'
import { readStatus } from '../../process/proc.js'
import { checkIdentity } from '../../process/identity.js'
import { pollUntil } from '../../process/poll.js'
import { killTree } from '../../process/tree.js'
import { criuDumpArgs, stopConversionScript } from '../../tools/criu.js'
import { diagnoseCriuLog } from '../../tools/criu-log.js'
import { readPstreeImage } from '../../criu-images/pstree.js'
import { isToolLine, startGatedTool, tailLines } from '../../tools/run.js'
import { recheckStopped } from './freeze.js'
import { letGoTimeoutMs, waitForToolToLetGo } from './let-go.js'
import { keepLockForRestore, lockConnections, readyNetworkLock, unlockConnections } from './network-lock.js'
import { assertTreeIntact, keptHint, throwIfToolStopped } from './outcome.js'
import { exitText, recordTool, STOP_TIMEOUT_MS, toolTimeoutMs, type DumpState } from './state.js'


/**
 * Before the freeze: criu's image directory, its post-dump script and its command line, and criu itself, started and
 * held at a gate. What the tree's stop converts and how criu is to be run are known from the preflight; the freeze
 * then pays for no fork of snap, only for criu's exec.
 */
export async function readyCheckpoint(s: DumpState, report: (d: string) => void): Promise<void> {
  const o = s.o
  await s.timed('criu-ready', async (rec) => {
    s.budget.checkCancelled('starting criu')
    const workDir = s.workDir!
    s.imagesDir = join(workDir, 'criu')
    mkdirSync(s.imagesDir)
    const logFile = join(workDir, 'logs', 'criu-dump.log')
    if (s.networkLock) {
      s.networkLock.criuLog = logFile
      // Before the freeze: if snap dies with the lock on, `snap recover` finds it from here.
      s.journal?.update({ networkLock: s.networkLock })
    }
    const outFile = join(workDir, 'logs', 'criu-dump.out')
    // Found stopped now (Ctrl+Z): converted while criu holds them. A process born during the stop was running.
    const toConvert = s.members.filter((m) => m.found === 'stopped').map((m) => m.id.pid)
    const marker = join(workDir, 'stop-converted')
    const actionScript = toConvert.length > 0 ? join(workDir, 'convert-stop.sh') : undefined
    if (actionScript) writeFileSync(actionScript, stopConversionScript(toConvert, marker), { mode: 0o700, flag: 'wx' })
    const args = criuDumpArgs(o.pid, s.imagesDir, logFile, { shellJob: false, extra: s.criuOptions, actionScript, kill: s.criuKills })
    const rssKiB = totalRssKiB(s)
    const tool = startGatedTool(s.criu!.path, args, {
      cancel: o.cancel,
      dieWithSnap: false, // see checkpoint(): if snap is killed, criu finishes and `snap recover` puts the tree back
      protectFromOom: true,
      // Ctrl+C, SIGTERM, SIGHUP and the deadline all stop criu only once it has let go of the tree.
      beforeStop: () => waitForToolToLetGo(s, 'criu', tool.pid, letGoTimeoutMs(rssKiB)),
      logFile: outFile,
      onSpawn: (pid) => s.trackTool(pid, true),
    })
    s.criuRun = { tool, logFile, outFile, marker, toConvert, timeoutMs: toolTimeoutMs(rssKiB) }
    readyNetworkLock(s)
    rec.note = `criu ${tool.pid ?? '?'} started, held until every thread is stopped: its start is not part of the freeze`
    report(rec.note)
  })
}

export async function checkpoint(s: DumpState, report: (d: string) => void): Promise<void> {
  const o = s.o
  await s.timed('checkpoint', async (rec) => {
    s.budget.checkCancelled('the checkpoint')
    const { tool, logFile, outFile, marker, toConvert, timeoutMs } = s.criuRun!
    const locked = await lockConnections(s)
    if (locked) report(locked)
    s.toolHolds = 'criu'
    s.criuOpened = true
    tool.open(s.budget.remainingMs(timeoutMs))
    const run = await tool.done
    s.criuResult = run
    if (run.pid !== undefined) s.trackTool(run.pid, false)
    // criu took every connection out of repair mode when it finished: the lock has done its work. When it did not
    // finish, the rollback first takes them out of repair mode, then removes the lock. When criu ended the tree as
    // asked, the lock stays until the restore.
    let kept: string | undefined
    if (run.exitCode === 0 && s.criuKills) kept = await confirmEndedByCriu(s)
    else if (run.exitCode === 0) await unlockConnections(s)
    // Whatever criu says, a process that died while it held the tree is the story.
    if (!s.killedByCriu) assertTreeIntact(s, 'the checkpoint (criu dump)')
    s.toolHolds = undefined
    s.budget.checkCancelled('the checkpoint (criu dump)')
    recordTool(rec, run)
    if (existsSync(logFile)) s.addArtifact('logs/criu-dump.log', 'log')
    s.addArtifact('logs/criu-dump.out', 'log')
    throwIfToolStopped(s, run, 'the checkpoint (criu dump)')
    const images = existsSync(s.imagesDir) ? readdirSync(s.imagesDir).sort() : []
    const complete = images.includes('inventory.img') && images.includes('pstree.img')
    if (run.exitCode !== 0 || !complete) {
      let why: { cause: string; hint?: string }
      try {
        why = diagnoseCriuLog(readFileSync(logFile, 'utf8'))
      } catch {
        why = { cause: tailLines(outFile, 2, isToolLine).join(' | ') || 'no error lines' }
      }
      throw new StepFailedError(
        `criu dump failed (${exitText(run)}${complete ? '' : ', images incomplete'}): ${why.cause}`,
        [why.hint, keptHint(logFile, 'criu-dump')].filter(Boolean).join('; '),
      )
    }
    // What was dumped is what criu wrote, not the list read before the stop. A PID namespace's init has its images
    // named by its pid inside the namespace (core-1.img), so the tree is taken from pstree.img, not from file names.
    s.dumped = readPstreeImage(join(s.imagesDir, 'pstree.img'))
    const missing = s.dumped.filter((t) => !images.includes(`core-${t.pid}.img`))
    if (missing.length > 0)
      throw new StepFailedError(`criu dump wrote no core image for ${missing.map((t) => t.pid).join(', ')} of the tree in pstree.img`, keptHint(logFile, 'criu-dump'))
    const known = new Set(s.members.map((m) => m.id.pid))
    const strangers = s.dumped.filter((t) => !known.has(t.pid))
    if (strangers.length > 0 && s.dumped[0]?.pid === o.pid)
      s.warn(`criu dumped ${strangers.length} process(es) snap had not seen in the tree: ${strangers.map((t) => t.pid).join(', ')}`)
    for (const img of images) s.addArtifact(`criu/${img}`, 'criu-image')
    if (toConvert.length > 0) {
      // Without the conversion gdb would resume a Ctrl+Z-stopped process when it detaches: do not go on.
      if (!existsSync(marker))
        throw new StepFailedError(
          "criu's post-dump script did not convert the stops found in place to SIGSTOP stops",
          keptHint(logFile, 'criu-dump', 'the tree was left stopped as it was'),
        )
      s.stopConverted = true
    }
    if (!s.killedByCriu) await recheckStopped(s, 'criu dump')
    report(
      `${s.dumped.length} process(es), ${images.length} image files; criu options: ${s.criuOptions.join(' ') || '(none)'}` +
        (s.killedByCriu ? `; the tree ended by criu as asked (--leave killed)${kept ? `, ${kept}` : ''}` : ''),
    )
  })
}

export function totalRssKiB(s: DumpState): number {
  let kib = 0
  for (const m of s.members) {
    const rss = /(\d+)/.exec(readStatus(m.id.pid)?.['VmRSS'] ?? '')
    if (rss?.[1]) kib += Number(rss[1])
  }
  return kib
}

/**
 * criu, asked to end the tree (DumpState.criuKills), said it did: every process is seen gone (a zombie its parent has
 * not reaped counts), and one still there, which criu did not dump or did not end, is killed as --leave killed asked.
 * From here on the images are the process. Returns what was kept of the network lock.
 */
async function confirmEndedByCriu(s: DumpState): Promise<string | undefined> {
  s.killedByCriu = true
  s.journal?.update({ killedByCriu: { images: s.imagesDir } })
  const kept = await keepLockForRestore(s)
  const ended = await pollUntil(() => s.members.every((m) => checkIdentity(m.id) !== 'same'), { timeoutMs: STOP_TIMEOUT_MS, maxIntervalMs: 5 })
  if (!ended) {
    const left = s.members.filter((m) => checkIdentity(m.id) === 'same')
    s.warn(`criu did not end ${left.map((m) => `${m.id.pid} (${m.comm})`).join(', ')}: killed by snap, as --leave killed asked`)
    await killTree(left, STOP_TIMEOUT_MS)
  }
  return kept
}