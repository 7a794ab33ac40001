// `snap doctor`: what snap would use on this host and what is wrong, each problem with its fix.

import { readdirSync, readFileSync } from 'node:fs'
import { arch, release } from 'node:os'
import { loadTrustedKeys } from '../bundle/trust.js'
import { SnapError } from '../errors.js'
import { CAP_CHECKPOINT_RESTORE, CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_RESOURCE, hasCap, readEffectiveCaps, readPtraceScope, readStat } from '../process/proc.js'
import { runCanary, type CanaryReport } from './canary.js'
import { criuCheck, findCriu, MIN_CRIU } from '../tools/criu.js'
import { findGdb, MIN_GDB } from '../tools/gdb.js'
import { isExecutableFile, locateTool } from '../tools/locate.js'
import { iptablesCriuRules, nftCriuTables, nftSnapTables, snapTableOwner } from '../tools/network-lock.js'
import { keptLocks } from '../pipelines/kept-locks.js'

/** Is any criu running on the host (by its executable's name)? */
function criuRunning(): boolean {
  let names: string[] = []
  try {
    names = readdirSync('/proc').filter((n) => /^\d+$/.test(n))
  } catch {
    return false
  }
  return names.some((n) => {
    try {
      return readFileSync(`/proc/${n}/comm`, 'utf8').trim() === 'criu'
    } catch {
      return false
    }
  })
}

async function findNetworkLocks(): Promise<DoctorReport['networkLocks']> {
  const running = criuRunning()
  const tables = (await nftCriuTables()).map((t) => ({ lock: `nftables table inet ${t}`, remove: `nft delete table inet ${t}`, ownerRunning: running }))
  const rules = (await iptablesCriuRules()).map((r) => {
    const tool = r.program.split('/').at(-1)!
    return { lock: `${tool} ${r.spec}`, remove: `${tool} -D ${r.spec.slice('-A '.length)}`, ownerRunning: running }
  })
  // snap's own lock names its snap: it is an orphan once that snap is gone.
  // One kept for a restore (dump --leave killed) waits for that restore, not for its snap.
  const kept = keptLocks()
  const mine = (await nftSnapTables()).map((t) => {
    const owner = snapTableOwner(t)
    const alive = owner !== undefined && readStat(owner.pid)?.startTime === owner.startTime
    const keptFor = kept.get(t)?.bundle
    return { lock: `nftables table inet ${t} (snap ${owner?.pid ?? '?'}'s)`, remove: `nft delete table inet ${t}`, ownerRunning: alive, ...(keptFor ? { keptFor } : {}) }
  })
  return [...tables, ...mine, ...rules]
}

export interface ToolReport {
  path: string | null
  version: string | null
  ok: boolean
  error: string | null
}

export interface DoctorReport {
  ok: boolean
  criu: ToolReport & { minimum: string; check: { ok: boolean; lines: string[] } | null }
  gdb: ToolReport & { minimum: string }
  kernel: { release: string; arch: string }
  ptraceScope: number | null
  uid: number
  capabilities: { sysPtrace: boolean; sysAdmin: boolean; checkpointRestore: boolean; sysResource: boolean }
  /** Programs snap uses besides criu and gdb; `required: false` ones have a fallback or serve one option. */
  helpers: { name: string; path: string | null; required: boolean; usedFor: string }[]
  problems: { what: string; fix: string }[]
  /** What this host cannot capture, and why: each a missing program or capability and what it rules out. */
  ruledOut: { missing: string; rulesOut: string }[]
  /** A canary with a listening socket and an established connection, dumped and restored (null: not run). */
  canary: CanaryReport | null
  /** criu's network lock found on the host (nftables tables, iptables rules), and whether a running criu may own it. */
  networkLocks: { lock: string; remove: string; ownerRunning: boolean; keptFor?: string }[]
  /** The trusted-keys directory: the keys restore trusts, and those it ignores (each a problem, with its fix). */
  trustedKeys: { dir: string; trusted: { path: string; fingerprint: string }[]; ignored: { path: string; why: string; fix: string }[] }
}

const HELPERS: { name: string; paths: string[]; required: boolean; usedFor: string }[] = [
  { name: 'setpriv', paths: ['/usr/bin/setpriv', '/bin/setpriv'], required: true, usedFor: 'kills gdb/criu if snap dies (parent-death signal)' },
  { name: 'zstd', paths: ['/usr/bin/zstd', '/usr/local/bin/zstd', '/bin/zstd'], required: false, usedFor: 'fast multi-core bundle compression and reading (else Node, one core, frame by frame)' },
  { name: 'unshare', paths: ['/usr/bin/unshare', '/bin/unshare'], required: false, usedFor: 'restore --new-pidns' },
  { name: 'python3', paths: ['/usr/bin/python3', '/bin/python3'], required: false, usedFor: 'cores built from the CRIU images: in-kernel page copy (else slower); the doctor\'s canary' },
  { name: 'iptables', paths: ['/usr/sbin/iptables', '/sbin/iptables', '/usr/bin/iptables'], required: false, usedFor: 'criu --tcp-established: locks the network around established connections' },
  { name: 'nft', paths: ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'], required: false, usedFor: "criu's nftables network lock (one table per dump instead of two iptables runs per connection): snap asks for it only where it can find and remove a table a dead criu left" },
]

async function probe<T extends { path: string; version: string }>(find: () => Promise<T>, name: 'criu' | 'gdb', flag?: string): Promise<ToolReport> {
  try {
    const t = await find()
    return { path: t.path, version: t.version, ok: true, error: null }
  } catch (e) {
    let path: string | null = null
    try {
      path = locateTool(name, flag).path
    } catch {
      path = null
    }
    return { path, version: null, ok: false, error: e instanceof SnapError ? e.oneLine() : String(e) }
  }
}

export async function diagnose(
  flags: { criu?: string; gdb?: string },
  canary?: { toolVersion: string; cancel: AbortSignal },
): Promise<DoctorReport> {
  const problems: DoctorReport['problems'] = []
  // Asked, never remembered: the doctor is run to see whether the tools run at all.
  const criu = await probe(() => findCriu(flags.criu, undefined, null), 'criu', flags.criu)
  const gdb = await probe(() => findGdb(flags.gdb, undefined, null), 'gdb', flags.gdb)
  let check: DoctorReport['criu']['check'] = null
  if (criu.ok && criu.path) {
    check = await criuCheck(criu.path)
    if (!check.ok) problems.push({ what: `\`criu check\` fails: ${check.lines.at(-1) ?? ''}`, fix: 'run `criu check --all` for details; a newer criu usually fixes it' })
  }
  if (!criu.ok) problems.push({ what: criu.error ?? 'criu unusable', fix: 'run `npm run setup`, or pass --criu PATH / set PROCSNAP_CRIU' })
  if (!gdb.ok) problems.push({ what: gdb.error ?? 'gdb unusable', fix: 'apt-get install gdb, or pass --gdb PATH / set PROCSNAP_GDB' })
  const caps = readEffectiveCaps('self')
  const capabilities = {
    sysPtrace: hasCap(caps, CAP_SYS_PTRACE),
    sysAdmin: hasCap(caps, CAP_SYS_ADMIN),
    checkpointRestore: hasCap(caps, CAP_CHECKPOINT_RESTORE),
    sysResource: hasCap(caps, CAP_SYS_RESOURCE),
  }
  if (!capabilities.sysAdmin && !capabilities.checkpointRestore) problems.push({ what: 'no CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE: criu cannot run', fix: 'run snap as root' })
  if (!capabilities.sysPtrace) problems.push({ what: 'no CAP_SYS_PTRACE: only processes of this uid can be captured', fix: 'run snap as root' })
  const ptraceScope = readPtraceScope() ?? null
  if (ptraceScope === 3) problems.push({ what: 'kernel.yama.ptrace_scope is 3: tracing is disabled until reboot', fix: 'reboot with ptrace_scope < 3' })
  // Found as snap finds them when it runs them: a file there without its run bit is not found.
  const helpers = HELPERS.map((h) => ({ name: h.name, path: h.paths.find((p) => isExecutableFile(p)) ?? null, required: h.required, usedFor: h.usedFor }))
  for (const h of helpers)
    if (!h.path && h.required) problems.push({ what: `${h.name} not found (${h.usedFor})`, fix: 'run `npm run setup` (util-linux provides setpriv)' })
  const ruledOut: DoctorReport['ruledOut'] = []
  const has = (name: string) => helpers.some((h) => h.name === name && h.path)
  if (!has('iptables'))
    ruledOut.push({ missing: 'iptables', rulesOut: 'checkpointing any process with an established TCP connection (criu locks the network with it); --core-only still works' })
  if (!capabilities.sysResource)
    ruledOut.push({
      missing: 'CAP_SYS_RESOURCE',
      rulesOut: 'checkpointing a process of another uid (nginx workers as www-data, PostgreSQL): criu must read its rlimits; --core-only still works',
    })
  // A lock no running criu owns is one a dead criu left: its connections hang until it is removed.
  const networkLocks = await findNetworkLocks()
  const orphans = networkLocks.filter((l) => !l.ownerRunning && !l.keptFor)
  if (orphans.length > 0)
    problems.push({
      what: `criu's network lock is on this host with no criu running (${orphans.length}: ${orphans.map((l) => l.lock).join('; ')}): the connections it names hang`,
      fix: `remove it: ${orphans.map((l) => `\`${l.remove}\``).join(', ')}`,
    })
  // A key restore ignores is one someone else could have planted: a problem until its owner or mode is fixed.
  const keys = loadTrustedKeys()
  for (const k of keys.ignored) problems.push({ what: `trusted key ${k.path} is ignored: ${k.why}`, fix: k.fix })
  const trustedKeys = {
    dir: keys.dir,
    trusted: keys.trusted.map((k) => ({ path: k.path, fingerprint: k.fingerprint })),
    ignored: keys.ignored.map((k) => ({ path: k.path, why: k.why, fix: k.fix })),
  }
  // The canary only where criu could run at all: as root with a working criu and gdb.
  let canaryReport: CanaryReport | null = null
  if (canary && criu.ok && gdb.ok && (check?.ok ?? false) && (capabilities.sysAdmin || capabilities.checkpointRestore)) {
    canaryReport = await runCanary({ criu: flags.criu, gdb: flags.gdb, ...canary })
    if (!canaryReport.ok) {
      const failed = canaryReport.steps.find((s) => !s.ok)
      problems.push({
        what: `the canary (a listening socket and an established connection) ${failed ? `failed at "${failed.what}": ${failed.detail}` : `was skipped: ${canaryReport.skipped}`}`,
        fix: 'fix what the step names; `snap dump` of a real service would fail the same way',
      })
    }
  }
  return {
    ok: problems.length === 0,
    networkLocks,
    trustedKeys,
    ruledOut,
    canary: canaryReport,
    criu: { ...criu, minimum: MIN_CRIU.text, check },
    gdb: { ...gdb, minimum: MIN_GDB.text },
    kernel: { release: release(), arch: arch() },
    ptraceScope,
    uid: process.geteuid?.() ?? 0,
    capabilities,
    helpers,
    problems,
  }
}
