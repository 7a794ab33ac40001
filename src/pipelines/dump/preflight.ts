// Stage 1, before any signal: who may do this, the locks, the tools, the whole tree as it is now, what criu could not
// dump (refused here, naming the process, the cause and the way out), the criu options the tree needs and why, room.

import { mkdirSync, mkdtempSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { checkOutputPath, defaultOutputName, workDirPrefix } from '../../bundle/output-path.js'
import { TargetRefusedError, ToolError } from '../../errors.js'
import { checkPrivileges, checkTargetAllowed } from '../../process/access.js'
import { estimateFromSmaps } from '../../process/capture-size.js'
import { describeTarget } from '../../process/describe.js'
import { chooseCriuOptions } from '../../process/criu-options.js'
import { findRefusals, isTcpConnection, treeHasOwnNetns } from '../../process/dump-plan.js'
import type { TreeFacts } from '../../process/tree-facts.js'
import { criuSupportsNftables, networkLockGiven, nftProgram, snapTableName } from '../../tools/network-lock.js'
import { assertSameProcess, captureIdentity } from '../../process/identity.js'
import { readTreeFacts } from '../../process/tree-facts.js'
import { parseSmaps } from '../../process/memory-map.js'
import { mappedElfFiles } from '../../process/binaries.js'
import { readFdLinks } from '../../process/sockets.js'
import { discoverTree } from '../../process/tree.js'
import { describeContainer } from '../../process/container.js'
import { readLink, readProcText, readStat } from '../../process/proc.js'
import { criuCheckOnce, findCriu, type CriuInfo } from '../../tools/criu.js'
import { findGdb, gdbSessionArgs } from '../../tools/gdb.js'
import { startTool, type StartedTool } from '../../tools/run.js'
import { totalRssKiB } from './checkpoint.js'
import { holdsTree, letGoTimeoutMs, waitForToolToLetGo } from './let-go.js'
import { cacheDir } from '../../environment.js'
import { Journal } from '../journal.js'
import { MiB, type DumpState } from './state.js'

export async function preflight(s: DumpState, report: (d: string) => void): Promise<void> {
  const o = s.o
  await s.timed('preflight', async (rec) => {
    s.identity = captureIdentity(o.pid)
    // Who may do this is decided from /proc alone, before the lock: a refusal must leave nothing behind.
    checkPrivileges(o.pid)
    // The per-target lock comes first: a second snap on this target stops here and names the first, before it reads
    // a state the first one may be changing. Nothing has been sent yet, so the recorded states are placeholders.
    s.journal = Journal.open({
      operation: 'dump',
      target: s.identity,
      originalState: 'running',
      restoreTo: 'running',
      step: 'preflight',
      touched: false,
      output: null,
      partialPath: null,
      workDir: null,
    })
    // The root's own process lock at once: a dump of a tree that holds it (its parent's, say) stops here, before the
    // checks below mistake that dump's tracer for someone else's debugger.
    s.journal.lockProcesses([s.identity])
    checkTargetAllowed(o.pid)
    // The tool probes, `criu check` and the target's description are independent: run them side by side. A passed
    // `criu check` is remembered beside the journals for this criu, kernel and boot, and not run again.
    const needCriu = !o.coreOnly
    const criuFound: Promise<CriuInfo | undefined> = needCriu ? findCriu(o.criu) : Promise.resolve(undefined)
    const checked = o.skipCriuCheck || !needCriu ? Promise.resolve(undefined) : criuFound.then((c) => criuCheckOnce(c!, cacheDir()))
    const [criu, gdb, check, target] = await s.budget.unlessStopped(
      Promise.allSettled([criuFound, findGdb(o.gdb), checked, describeTarget(o.pid, { includeEnv: o.includeEnv, budget: s.budget, warn: (w) => s.warn(w) })]),
      'preflight (tool versions and `criu check`)',
    )
    if (criu.status === 'rejected') throw criu.reason
    if (gdb.status === 'rejected') throw gdb.reason
    s.criu = criu.value
    s.gdb = gdb.value
    report(`${s.criu ? `criu ${s.criu.version} (${s.criu.path}), ` : ''}gdb ${s.gdb.version} (${s.gdb.path})`)
    if (check.status === 'rejected') throw check.reason
    if (check.value?.rememberedFrom) report(`\`criu check\` passed at ${check.value.rememberedFrom} on this boot: not run again`)
    if (check.value && !check.value.ok)
      throw new ToolError(`\`criu check\` fails on this host: ${check.value.lines.at(-1) ?? 'no output'}`, 'run `snap doctor` for details')
    if (target.status === 'rejected') throw target.reason
    s.target = target.value

    // The tree as it is now: every process, each with its own found state.
    s.members = await discoverTree(s.identity)
    // Every process of the tree locked before any signal: a dump of a parent and one of a child never stop the same
    // process, each taking the other's stop for the state it found.
    s.journal.lockProcesses(s.members.map((m) => m.id))
    assertSameProcess(s.identity, 'preflight')
    const pids = s.members.map((m) => m.id.pid)
    s.target.treePids = pids
    const facts = readTreeFacts(o.pid, pids)
    s.facts = facts
    // smaps is read once per process: what `inspect` shows of its memory, and the room the capture needs.
    const smaps = new Map<number, string>()
    for (const pid of pids) {
      const text = readProcText(`/proc/${pid}/smaps`)
      if (text !== undefined) {
        smaps.set(pid, text)
        s.memoryMaps.set(pid, parseSmaps(text))
      }
      s.openFiles.set(pid, readFdLinks(pid).filter((l) => l.link.startsWith('/')).slice(0, 64).map((l) => ({ fd: l.fd, path: l.link })))
      if (o.includeBinaries) for (const f of mappedElfFiles(pid)) if (!s.mappedBinaries.has(f)) s.mappedBinaries.set(f, pid)
    }
    if (!o.coreOnly) {
      const plan = chooseCriuOptions(facts)
      // The connections are locked while criu dumps them. In the host's network namespace snap takes the lock itself
      // (one nftables transaction, a table named after this snap); a tree with a network namespace of its own is
      // locked whole by criu, with nftables where it can (a table per run), else iptables (src/tools/network-lock.ts).
      const locking = lockNeeded(facts, plan.options) && !networkLockGiven(o.criuExtraOptions)
      // criu's own nftables lock (a network namespace of the tree's own) is asked for only where a table it leaves
      // behind can be found and removed (`nft`), and only where this criu has it: one more criu run, for those trees.
      const criuNftables = async () => nftProgram() !== undefined && (await s.budget.unlessStopped(criuSupportsNftables(s.criu!.path), 'preflight (`criu check --feature nftables`)'))
      const lockMethod = !locking ? undefined : !treeHasOwnNetns(facts) ? (nftProgram() ? 'snap' : undefined) : (await criuNftables()) ? 'nftables' : undefined
      const lockOptions = lockMethod === 'snap' ? ['--network-lock', 'skip'] : lockMethod === 'nftables' ? ['--network-lock', 'nftables'] : []
      // What criu cannot dump is found now, before any signal, not after the freeze.
      const refusals = findRefusals(facts, { criuExtraOptions: [...o.criuExtraOptions, ...lockOptions] })
      if (refusals.length > 0) {
        const first = refusals[0]!
        const more = refusals.length > 1 ? ` (and ${refusals.length - 1} more: ${refusals.slice(1).map((r) => `${r.pid} ${r.code}`).join(', ')})` : ''
        throw new TargetRefusedError(`cannot checkpoint process ${first.pid} (${first.comm}): ${first.cause}${more}`, first.hint)
      }
      s.criuReasons = [...plan.reasons]
      s.criuOptions = [...plan.options]
      if (lockMethod) {
        s.criuOptions.push(...lockOptions)
        s.criuReasons.push(
          lockMethod === 'snap'
            ? {
                option: '--network-lock skip',
                reason:
                  'snap locks the connections itself while criu dumps them: one nftables transaction for all of them (criu takes two iptables runs per connection, and its own nftables lock aborts past about 250), in a table named after this snap that the rollback and recover remove',
              }
            : {
                option: '--network-lock nftables',
                reason: 'criu locks the network namespace while it dumps it: one nftables table per run instead of iptables, and a table a dead criu leaves is found by its run id and removed',
              },
        )
      }
      if (lockNeeded(facts, [...plan.options, ...o.criuExtraOptions]))
        s.networkLock = {
          method: lockMethod ?? networkLockGiven(o.criuExtraOptions) ?? 'iptables',
          table: lockMethod === 'snap' ? snapTableName(process.pid, readStat(process.pid)?.startTime ?? 0) : undefined,
          criuLog: '', // known once criu is readied (readyCheckpoint)
          connections: facts.processes.flatMap((p) => p.sockets.filter(isTcpConnection).map((c) => ({ local: c.local, remote: c.remote }))),
        }
      // A container's init: the mounts bound in from the host are named to criu as external, the way runc does.
      s.container = describeContainer(o.pid, readLink, pids)
      if (s.container) {
        if (s.container.problems.length > 0)
          throw new TargetRefusedError(`cannot checkpoint the container of ${o.pid}: ${s.container.problems.join('; ')}`, `take cores without a checkpoint: snap dump --core-only ${o.pid}`)
        for (const m of s.container.externalMounts) {
          s.criuOptions.push('--external', `mnt[${m.key}]:${m.key}`)
          s.criuReasons.push({ option: `--external mnt[${m.key}]`, reason: `${m.key} (${m.fstype}) is bound into the container from the host's ${m.hostPath}` })
        }
      }
      const extra = o.criuExtraOptions.filter((x) => !s.criuOptions.includes(x))
      for (const x of extra) s.criuReasons.push({ option: x, reason: 'given with --criu-opt' })
      s.criuOptions.push(...extra)
    }
    rec.note = s.criuReasons.map((r) => `${r.option}: ${r.reason}`).join('; ') || undefined

    const corePids = new Set(o.cores === 'root' ? [o.pid] : pids)
    const estimate = estimateFromSmaps(smaps, corePids, !o.coreOnly)
    const name = o.output ?? defaultOutputName(s.target.comm, o.pid, s.startedAt, o.compression, o.encryption !== undefined)
    s.output = checkOutputPath(name, estimate.totalBytes)
    const stopped = s.members.filter((m) => m.found === 'stopped').length
    report(
      `${s.target.comm}: ${s.members.length} process${s.members.length === 1 ? '' : 'es'} (${stopped} found stopped), ` +
        `${s.target.threads} threads in the root; ` +
        `about ${Math.round(estimate.totalBytes / MiB)} MiB to write`,
    )
    for (const r of s.criuReasons) report(`criu ${r.option}: ${r.reason}`)
    s.budget.checkCancelled('preflight')
    // Before the first signal: the journal must say what to put back, for every process, so a crash can be recovered.
    s.journal.update({
      originalState: s.members[0]!.found,
      restoreTo: s.members[0]!.found,
      members: s.members.map((m) => ({ id: m.id, restoreTo: m.found })),
      output: s.output,
    })
    // Named with snap's pid, like the partial bundle: if snap dies between creating it and journalling it, `snap
    // recover` still finds it.
    s.workDir = mkdtempSync(join(dirname(s.output), workDirPrefix(s.output, process.pid)))
    mkdirSync(join(s.workDir, 'logs'))
    s.journal.update({ workDir: s.workDir })
    if (s.coreSource === 'gcore') startGdbSession(s)
  })
}

/**
 * gdb is started before the tree is frozen and waits for its commands on stdin: its own start-up (about 150 ms here)
 * is then not part of the freeze window.
 */
function startGdbSession(s: DumpState): void {
  const session: StartedTool = startTool(s.gdb!.path, gdbSessionArgs(), {
    cancel: s.o.cancel,
    protectFromOom: true, // it holds the frozen tree while it writes the cores
    // Between two processes gdb holds none: a signal or the deadline stops it there, never inside an attach or a gcore,
    // nor once it was given an attach (gcore-feed.ts).
    beforeStop: async () => {
      const timeoutMs = letGoTimeoutMs(totalRssKiB(s))
      await s.gcoreFeed?.letGo(timeoutMs, () => holdsTree(s, session.pid), (line) => s.progress.note(line))
      await waitForToolToLetGo(s, 'gdb', session.pid, timeoutMs)
    },
    logFile: join(s.workDir!, 'logs', 'gdb.log'),
    stdin: 'pipe',
    onSpawn: (pid) => s.trackTool(pid, true),
  })
  s.gdbSession = session
}

/** criu takes a network lock for a tree with TCP connections (--tcp-established), and for one in a network namespace
 *  of its own, which it locks whole. */
function lockNeeded(facts: TreeFacts, options: string[]): boolean {
  return treeHasOwnNetns(facts) || options.includes('--tcp-established')
}
