// Stage 6: the bundle: manifest first (what was dumped, per process, and why each criu option), every artifact
// hashed while it is compressed, written under a temporary name and linked into place. Killing, if asked, comes last.
// With cores built from the images, the writing starts as soon as the tree is back (startSeal), beside the cores.

import { rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { ArtifactRecord, Manifest, ProcessRecord } from '../../bundle/manifest.js'
import { MANIFEST_FORMAT, MANIFEST_SCHEMA_VERSION } from '../../bundle/manifest.js'
import { signBytes } from '../../bundle/signature.js'
import { writeBundle } from '../../bundle/writer.js'
import { humanBytes } from '../../bundle/output-path.js'
import { describeCustody, describeHost } from '../../process/describe.js'
import { killTree } from '../../process/tree.js'
import { recordKeptLock } from '../kept-locks.js'
import { readThreadCreds } from '../../criu-images/identity.js'
import { round } from '../../tools/run.js'
import { ByteMeter, meterIntervalMs } from '../byte-meter.js'
import { STOP_TIMEOUT_MS, type DumpState } from './state.js'
import { normalizationRecord } from './freeze.js'

/**
 * Starts writing the bundle with the artifacts there now (the criu images and logs, most of its bytes) while the
 * rest is still being made: the cores' recipes and the stacks, built from those same images once the tree is back.
 * They are written after the images, once `seal` hands them over. The bundle's bytes stream to disk meanwhile, and
 * the flush to disk, most of a large seal, overlaps the cores.
 */
export function startSeal(s: DumpState): void {
  if (s.sealing) return
  const known = [...s.artifacts]
  let hand!: (artifacts: typeof s.artifacts) => void
  let refuse!: (reason: Error) => void
  const later = new Promise<typeof s.artifacts>((resolve, reject) => {
    hand = resolve
    refuse = reject
  })
  const signKey = s.o.signKeyPath
  const createdAt = new Date().toISOString()
  const stop = new AbortController()
  const startedAt = performance.now()
  const sizeOf = (artifacts: typeof s.artifacts) => artifacts.reduce((n, a) => n + fileSize(join(s.workDir!, a.path)), 0)
  // Silent until the seal step: the steps before it have their own lines.
  const meter = new ByteMeter(undefined, sizeOf(known), meterIntervalMs(s.progress.mode), 'written into the bundle: ')
  const writing = writeBundle({
    workDir: s.workDir!,
    artifacts: known,
    later,
    // A recipe and a blob per core, the two stacks files, and the binaries of --include-binaries; and the room of one
    // more record per process for its runtime, which the stacks find after this reserve is taken (with
    // --include-binaries, two more for its reader's files).
    laterCount: 3 * s.members.length + 2 + (s.o.includeBinaries ? s.mappedBinaries.size + 2 * s.members.length : 0),
    manifest: (records) => buildManifest(s, records, createdAt),
    sign: signKey ? (bytes) => signBytes(signKey, bytes) : undefined,
    output: s.output,
    compression: s.o.compression,
    // A tree's processes are a master's forks, mostly: their images and cores hold the same pages.
    longMatches: s.members.length > 1,
    encryption: s.o.encryption,
    signal: stop.signal,
    onBytes: (done) => meter.update(done),
    onPartial: (p) => {
      if (stop.signal.aborted) return
      s.partial = p
      s.o.onPartialBundle?.(p, s.output)
      s.journal?.update({ partialPath: p ?? null })
    },
  })
  // On a failure, a signal or the deadline the writer is abandoned: it stops at its next chunk and never links its
  // file under the final name; the rollback unlinks the partial file as well.
  writing.catch(() => undefined)
  s.sealing = {
    known: known.length,
    startedAt,
    meter,
    hand: (artifacts) => {
      meter.addTotal(sizeOf(artifacts))
      hand(artifacts)
    },
    abandon: (reason) => {
      stop.abort(reason)
      refuse(reason)
    },
    get abandoned() {
      return stop.signal.aborted
    },
    writing,
  }
}

/** Finishes the bundle: hands the writer what was made since startSeal (or starts it now with everything). */
export async function seal(s: DumpState, report: (d: string) => void): Promise<ArtifactRecord[]> {
  return s.timed('seal', async (rec) => {
    s.budget.checkCancelled('sealing the bundle')
    const overlapped = s.sealing !== undefined
    startSeal(s)
    const sealing = s.sealing!
    sealing.hand(s.artifacts.slice(sealing.known))
    sealing.meter.speakTo(report)
    let written: Awaited<typeof sealing.writing>
    try {
      written = await s.budget.unlessStopped(sealing.writing, 'sealing the bundle')
    } catch (e) {
      sealing.abandon(e as Error)
      throw e
    }
    if (overlapped) rec.note = `started when the tree was back, ${round(performance.now() - sealing.startedAt)} ms before it ended: the images streamed into the bundle while the cores were built`
    if (s.o.cancel.aborted) {
      // The signal came just as the bundle was linked into place: the person asked snap to stop, so it goes.
      rmSync(written.path, { force: true })
      s.budget.checkCancelled('sealing the bundle')
    }
    report(`${written.path} (${humanBytes(written.size)}, ${s.o.compression})`)
    if (s.finalState === 'killed' && !s.killedByCriu) await killTree(s.members, STOP_TIMEOUT_MS)
    const kept = s.networkLockKept
    if (kept) recordKeptLock({ table: kept.table, bundle: written.path, connections: kept.connections, keptAt: new Date().toISOString() })
    return written.manifest.artifacts
  })
}

function fileSize(path: string): number {
  try {
    return statSync(path).size
  } catch {
    return 0 // the writer names a missing artifact itself
  }
}

/** One record per process: the tree criu dumped (pstree.img) when there is a checkpoint, else the one snap stopped. */
export function processRecords(s: DumpState): ProcessRecord[] {
  // pstree.img names each process by its pid in the tree's own PID namespace (a container's init is 1 there).
  const byInnerPid = new Map(s.members.map((m) => [s.container ? m.innerPid : m.id.pid, m]))
  const left = new Map(s.outcomes.map((x) => [x.pid, x.left]))
  const leftFor = (pid: number | undefined) => (s.finalState === 'killed' ? 'killed' : ((pid !== undefined ? left.get(pid) : undefined) ?? 'unknown'))
  if (s.dumped) {
    const creds = s.threadCreds
    return s.dumped.map((t) => {
      const m = byInnerPid.get(t.pid)
      const hostPid = m?.id.pid
      return {
        pid: t.pid,
        ...(hostPid !== undefined && hostPid !== t.pid ? { hostPid } : {}),
        // criu writes 0 for the root's parent, which it did not dump; the host's /proc said who it was (a container's
        // init keeps 0: its parent is outside its PID namespace).
        ppid: t.ppid === 0 && m && !s.container ? m.ppid : t.ppid,
        pgid: t.pgid,
        sid: t.sid,
        comm: m?.comm ?? '',
        // A zombie has no thread left: criu's entry for it is not a thread id. It is recorded as exited.
        threads: t.exited ? 0 : t.threads.length,
        tids: t.exited ? [] : t.threads.filter((tid) => tid >= 1),
        ...(t.exited ? { exited: true } : {}),
        found: m?.found ?? 'running',
        left: t.exited && s.finalState !== 'killed' ? 'gone' : leftFor(hostPid),
        ...coreFields(s, hostPid),
        ...procFields(s, hostPid),
        ...runtimeField(s, hostPid),
        ...(creds ? { threadCreds: t.threads.map((tid) => ({ tid, creds: creds.get(tid) ?? null })) } : {}),
        source: 'pstree.img',
      }
    })
  }
  return s.members.map((m) => ({
    pid: m.id.pid,
    ppid: m.ppid,
    pgid: null,
    sid: null,
    comm: m.comm,
    threads: m.threadsAtStop.length,
    tids: m.threadsAtStop.map((t) => t.tid),
    found: m.found,
    left: leftFor(m.id.pid),
    ...coreFields(s, m.id.pid),
    ...procFields(s, m.id.pid),
    ...runtimeField(s, m.id.pid),
    source: 'proc',
  }))
}

/**
 * Read once criu has written the images, before any of them is streamed into the bundle and removed: every
 * thread's credentials as criu froze them (core-TID.img): what a restore gives each thread back, recorded so
 * that restore can refuse images that give any thread other ones (a second thread as root under a main thread of
 * nobody). Read from the images rather than /proc before the freeze, so a thread born in between has its record too.
 */
export function readDumpedThreadCreds(s: DumpState): void {
  try {
    s.threadCreds = new Map(readThreadCreds(s.imagesDir, s.dumped ?? []).map((t) => [t.tid, t.creds]))
  } catch (e) {
    s.warn(`the threads' credentials could not be read from the CRIU images (${(e as Error).message}); restore will refuse this bundle`)
  }
}

/** A process's core: its name, and whether it is stored or kept as a recipe (then with the sha256 to rebuild to). */
function coreFields(s: DumpState, hostPid: number | undefined): Pick<ProcessRecord, 'core' | 'coreStored' | 'coreSha256'> {
  if (hostPid === undefined || !s.coreFiles.has(hostPid)) return { core: null }
  const sha256 = s.coreRecipes.get(hostPid)
  return sha256 ? { core: `core.${hostPid}`, coreStored: false, coreSha256: sha256 } : { core: `core.${hostPid}`, coreStored: true }
}

/** The language runtime the stacks found in a process's core; none for a process without a core. */
function runtimeField(s: DumpState, hostPid: number | undefined): Pick<ProcessRecord, 'runtime'> {
  const runtime = hostPid === undefined ? undefined : s.runtimes.get(hostPid)
  return runtime ? { runtime } : {}
}

/** What /proc showed of a process before the freeze: its sockets, namespaces and memory by mapping. */
function procFields(s: DumpState, hostPid: number | undefined): Pick<ProcessRecord, 'sockets' | 'files' | 'namespaces' | 'memory'> {
  const facts = s.facts?.processes.find((p) => p.pid === hostPid)
  const memory = hostPid === undefined ? undefined : s.memoryMaps.get(hostPid)
  const files = hostPid === undefined ? undefined : s.openFiles.get(hostPid)
  return {
    ...(files ? { files } : {}),
    ...(facts ? { sockets: facts.sockets.map((k) => ({ fd: k.fd, proto: `${k.family}/${k.proto}`, state: k.state, local: k.local, remote: k.remote })) } : {}),
    ...(facts ? { namespaces: { ...facts.ns } } : {}),
    ...(memory ? { memory: memory.map((m) => ({ ...m, sizeKiB: Math.round(m.sizeKiB) })) } : {}),
  }
}

function buildManifest(s: DumpState, artifacts: ArtifactRecord[], createdAt: string): Manifest {
  const root = s.members[0]!
  const processes = processRecords(s)
  const rootRecord = processes.find((p) => (p.hostPid ?? p.pid) === s.o.pid)
  // The root's threads as dumped: a thread born between the preflight and the stop is in the images, so it counts.
  const target = rootRecord ? { ...s.target, threads: rootRecord.threads, threadIds: [...rootRecord.tids].sort((a, b) => a - b) } : s.target
  target.treePids = processes.map((p) => p.hostPid ?? p.pid)
  return {
    format: MANIFEST_FORMAT,
    schemaVersion: MANIFEST_SCHEMA_VERSION,
    tool: { name: 'procsnap', version: s.o.toolVersion },
    createdAt,
    mode: s.mode,
    host: describeHost(),
    custody: describeCustody(s.startedAt),
    target,
    originalState: { state: root.found, threads: root.threadsFound.map((t) => ({ tid: t.tid, state: t.state })) },
    processes,
    cores: s.o.cores ?? 'all',
    ...(s.container ? { container: { rootfs: s.container.rootfs, externalMounts: s.container.externalMounts } } : {}),
    ...(s.o.naming ? { targetNaming: s.o.naming } : {}),
    ...(s.o.watch ? { watch: s.o.watch } : {}),
    ...(s.networkLockKept ? { networkLockKept: s.networkLockKept } : {}),
    normalization: normalizationRecord(s),
    steps: s.steps.filter((x) => x.name !== 'seal'),
    freezeWindowMs: s.freezeWindowMs,
    finalState: s.finalState,
    tools: {
      criu: s.criu ? { path: s.criu.path, version: s.criu.version, options: s.criuOptions, reasons: s.criuReasons } : null,
      gdb: { path: s.gdb!.path, version: s.gdb!.version },
    },
    artifacts,
    warnings: s.warnings,
    signed: s.o.signKeyPath !== undefined,
  }
}
