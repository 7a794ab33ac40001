// Stage 6: the bundle: manifest first (what was dumped, per process, and why each criu option), every artifact
// hashed while it is compressed, written under a temporary name and linked into place. Killing, if asked, comes last.

import { rmSync } from 'node:fs'
import type { ArtifactRecord, Manifest, ProcessRecord } from '../../bundle/manifest.js'
import { MANIFEST_FORMAT, MANIFEST_SCHEMA_VERSION } from '../../bundle/manifest.js'
import { signBytes } from '../../bundle/signature.js'
import { writeBundle } from '../../bundle/writer.js'
import { describeCustody, describeHost } from '../../process/describe.js'
import { killTree } from '../../process/tree.js'
import { MiB, STOP_TIMEOUT_MS, type DumpState } from './state.js'
import { normalizationRecord } from './freeze.js'

export async function seal(s: DumpState, report: (d: string) => void): Promise<ArtifactRecord[]> {
  return s.timed('seal', async () => {
    s.budget.checkCancelled('sealing the bundle')
    const signKey = s.o.signKeyPath
    const createdAt = new Date().toISOString()
    let abandoned = false
    const writing = writeBundle({
      workDir: s.workDir!,
      artifacts: s.artifacts,
      manifest: (records) => buildManifest(s, records, createdAt),
      sign: signKey ? (bytes) => signBytes(signKey, bytes) : undefined,
      output: s.output,
      compression: s.o.compression,
      onPartial: (p) => {
        if (abandoned) return
        s.partial = p
        s.journal?.update({ partialPath: p ?? null })
      },
    })
    // The writer cannot be stopped half way, so on a signal or the deadline it is abandoned: the rollback unlinks its
    // partial file, and then the writer can never link it under the final name.
    writing.catch(() => undefined)
    let written: Awaited<typeof writing>
    try {
      written = await s.budget.unlessStopped(writing, 'sealing the bundle')
    } catch (e) {
      abandoned = true
      throw e
    }
    if (s.o.cancel.aborted) {
      // The signal came just as the bundle was linked into place: the person asked snap to stop, so it goes.
      rmSync(written.path, { force: true })
      s.budget.checkCancelled('sealing the bundle')
    }
    report(`${written.path} (${Math.round(written.size / MiB)} MiB, ${s.o.compression})`)
    if (s.finalState === 'killed') await killTree(s.members, STOP_TIMEOUT_MS)
    return written.manifest.artifacts
  })
}

/** One record per process: the tree criu dumped (pstree.img) when there is a checkpoint, else the one snap stopped. */
export function processRecords(s: DumpState): ProcessRecord[] {
  // pstree.img names each process by its pid in the tree's own PID namespace (a container's init is 1 there).
  const byInnerPid = new Map(s.members.map((m) => [s.container ? m.innerPid : m.id.pid, m]))
  const left = new Map(s.outcomes.map((x) => [x.pid, x.left]))
  const leftFor = (pid: number | undefined) => (s.finalState === 'killed' ? 'killed' : ((pid !== undefined ? left.get(pid) : undefined) ?? 'unknown'))
  if (s.dumped) {
    return s.dumped.map((t) => {
      const m = byInnerPid.get(t.pid)
      const hostPid = m?.id.pid
      return {
        pid: t.pid,
        ...(hostPid !== undefined && hostPid !== t.pid ? { hostPid } : {}),
        ppid: t.ppid,
        pgid: t.pgid,
        sid: t.sid,
        comm: m?.comm ?? '',
        threads: t.threads.length,
        tids: t.threads,
        found: m?.found ?? 'running',
        left: leftFor(hostPid),
        ...coreFields(s, hostPid),
        ...procFields(s, hostPid),
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
    source: 'proc',
  }))
}

/** A process's core: its name, and whether it is stored or kept as a recipe (then with the sha256 to rebuild to). */
function coreFields(s: DumpState, hostPid: number | undefined): Pick<ProcessRecord, 'core' | 'coreStored' | 'coreSha256'> {
  if (hostPid === undefined || !s.coreFiles.has(hostPid)) return { core: null }
  const sha256 = s.coreRecipes.get(hostPid)
  return sha256 ? { core: `core.${hostPid}`, coreStored: false, coreSha256: sha256 } : { core: `core.${hostPid}`, coreStored: true }
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
