// criu restore, and the record of what it makes: every restored process goes into the journal with its start time
// the moment it can be seen, so a failed restore (or `recover` after a killed one) signals only what is its own.

import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Manifest } from '../../bundle/manifest.js'
import { RestoreFailedError } from '../../errors.js'
import { identifiedDescendants } from '../../process/identity.js'
import { pollUntil } from '../../process/poll.js'
import { readBootId, readChildren, readStat, readStatus, readTextFile } from '../../process/proc.js'
import { innerPidOf } from '../../process/tree.js'
import { criuRestoreArgs } from '../../tools/criu.js'
import { criuFailure, runCriuDetached, runCriuInNamespaces } from '../../tools/criu-restore.js'
import { toolTimeoutMs } from '../budget.js'
import { isolationSetup, ISOLATION_NAMESPACES } from './isolate.js'
import { keepsHostPids, manifestOf, STATE_WAIT_MS, timed, warn, type RestoreRunState } from './state.js'

export interface CriuRestored {
  /** The restored root's pid as this host sees it. */
  pid: number
  /** Its pid in its own pid namespace. */
  pidInNamespace: number
}

export async function restoreWithCriu(s: RestoreRunState): Promise<CriuRestored> {
  return timed(s, 'criu-restore', async () => {
    const manifest = manifestOf(s)
    const images = join(s.workDir!, 'criu')
    const logFile = join(s.workDir!, 'criu-restore.log')
    const outFile = join(s.workDir!, 'criu-restore.out')
    const pidfile = join(s.workDir!, 'restored.pid')
    // criu gives a task back in the state its images record, which is not always stopped: one it resumed ran on until
    // snap's SIGSTOP landed (a paused target came back a tick further on). --leave-stopped never lets it run, so the
    // tree is checked as criu made it (a process that starts threads would otherwise change under the check) and only
    // then put in its final state.
    const container = manifest.container
    const args = [
      ...criuRestoreArgs(images, logFile, pidfile, manifest.tools.criu!.options),
      '--leave-stopped',
      ...(container ? containerRestoreArgs(container) : []),
      // A copy is cut off from its peers: its connections come back closed, not talking to production.
      ...(s.o.tcpClose || s.o.isolate ? ['--tcp-close'] : []),
      ...(s.o.criuExtraOptions ?? []),
    ]
    const timeoutMs = s.budget.remainingMs(toolTimeoutMs(manifest.target.vmRssKiB))
    if (!keepsHostPids(s) && !container) return restoreInNamespaces(s, args, outFile, timeoutMs)
    const run = await runCriuDetached({
      criu: s.criu!.path,
      args: [...args, '--restore-sibling'],
      outFile,
      timeoutMs,
      containerRoot: container?.rootfs,
      cancel: s.o.cancel,
      onStarted: (pid) => {
        s.journal?.update({ step: 'restoring', touched: true, toolPids: [pid] })
        const start = s.journal?.current.toolStartTimes?.[0]
        return start != null ? { pid, startTime: start } : undefined
      },
      watch: (tool) => recordRestored(s, pidfile, tool),
    })
    const pid = pidFromFile(pidfile)
    if (run.exitCode !== 0 || pid === undefined) throw criuFailure(logFile, run.exitCode)
    return { pid, pidInNamespace: pid }
  })
}

/** --new-pidns and --isolate: criu as the init of namespaces of its own, under unshare. */
async function restoreInNamespaces(s: RestoreRunState, args: string[], outFile: string, timeoutMs: number): Promise<CriuRestored> {
  const manifest = manifestOf(s)
  const holder = await runCriuInNamespaces({
    criu: s.criu!.path,
    args,
    outFile,
    timeoutMs,
    cancel: s.o.cancel,
    namespaces: s.o.isolate ? ISOLATION_NAMESPACES : ['--pid'],
    setup: s.o.isolate ? isolationSetup(manifest, s.privateFiles, s.workDir!, (line) => warn(s, line)) : undefined,
    onStarted: (pid) => {
      s.holderPid = pid
      // If snap dies now, `recover` kills this group: unshare, criu as the namespace's init, and what it restored.
      s.journal?.update({ step: 'restoring', touched: true, toolPids: [pid] })
    },
  })
  // unshare -> criu (pid 1 inside) -> restored root.
  const criuHostPid = await pollUntil(() => readChildren(holder)[0], { timeoutMs: STATE_WAIT_MS })
  const root = criuHostPid !== undefined ? await pollUntil(() => readChildren(criuHostPid)[0], { timeoutMs: STATE_WAIT_MS }) : undefined
  if (root === undefined) throw new RestoreFailedError('criu reported success but no restored process was found in its new pid namespace')
  const rootStat = readStat(root)
  if (rootStat) s.restoredRoots.push({ pid: root, startTime: rootStat.startTime, bootId: readBootId() })
  recordTree(s)
  return { pid: root, pidInNamespace: innerPidOf(root, readStatus(root)) }
}

/**
 * Records in the journal, as soon as they can be seen, the processes criu has made: the root, then every process under
 * it, each with its start time. criu writes its pidfile only once the whole tree is restored, so until then the root is
 * found as what --restore-sibling makes it: a child of criu's parent (snap, unless criu runs under a wrapper). Either
 * way it must have the images' root pid and have started after criu did.
 */
function recordRestored(s: RestoreRunState, pidfile: string, tool: { pid: number; startTime: number }): void {
  if (!s.journal) return
  if (s.restoredRoots.length === 0) {
    const sibling = readChildren(process.pid).find((p) => p !== tool.pid && isImageRoot(s, p))
    const pid = [pidFromFile(pidfile), sibling].find((p) => p !== undefined && p !== tool.pid && isImageRoot(s, p))
    const st = pid !== undefined ? readStat(pid) : undefined
    if (pid !== undefined && st && st.startTime >= tool.startTime && st.state !== 'Z' && st.state !== 'X')
      s.restoredRoots.push({ pid, startTime: st.startTime, bootId: readBootId() })
  }
  recordTree(s)
}

/** Whether pid is where criu puts the images' root: its own pid, or inside a container the same pid in its namespace. */
function isImageRoot(s: RestoreRunState, pid: number): boolean {
  const want = s.imageTree?.[0]?.pid
  return want !== undefined && (keepsHostPids(s) ? pid : innerPidOf(pid)) === want
}

/** The restored roots and everything now under them, into the journal before anything may signal them. */
export function recordTree(s: RestoreRunState): void {
  s.journal?.recordRestored(s.restoredRoots.flatMap((r) => [r, ...identifiedDescendants(r)]))
}

/** criu restore options for a container: its root, and each mount bound in from the host, bound again from where it
 *  is on this host. A cgroup directory the original's runtime removed is made again (mkdir in a cgroup filesystem
 *  creates the cgroup). */
function containerRestoreArgs(c: NonNullable<Manifest['container']>): string[] {
  const args = ['--root', c.rootfs]
  for (const m of c.externalMounts) {
    if (!existsSync(m.hostPath) && (m.fstype === 'cgroup' || m.fstype === 'cgroup2')) mkdirSync(m.hostPath, { recursive: true })
    args.push('--external', `mnt[${m.key}]:${m.hostPath}`)
  }
  return args
}

/** The pid criu wrote to its pidfile, once it has. */
function pidFromFile(path: string): number | undefined {
  const pid = Number(readTextFile(path)?.trim())
  return Number.isInteger(pid) && pid > 1 ? pid : undefined
}
