// What restore checks before criu runs: each check names what is wrong and what to do, so a restore that would fail
// is refused with nothing started.

import { createHash } from 'node:crypto'
import { constants, readdirSync, statSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { arch, release } from 'node:os'
import { join } from 'node:path'
import type { Manifest } from '../../bundle/manifest.js'
import { RestoreRefusedError } from '../../errors.js'
import { compareVersions, parseVersion } from '../../tools/locate.js'
import { readStat } from '../../process/proc.js'
import { THREAD_CRED_FIELDS, type ImageIdentity, type ThreadCreds } from '../../criu-images/identity.js'
import type { OperationBudget } from '../budget.js'

export interface PreflightFindings {
  warnings: string[]
}

export function checkCriuVersion(manifest: Manifest, here: string): void {
  if (!manifest.tools.criu) return // core-only: refused before this, nothing for criu to restore
  const dumped = parseVersion(manifest.tools.criu.version)
  const local = parseVersion(here)
  if (dumped && local && compareVersions(local, dumped) < 0)
    throw new RestoreRefusedError(
      `criu ${here} on this host is older than criu ${manifest.tools.criu.version} that made the bundle`,
      `install criu >= ${manifest.tools.criu.version} or pass --criu PATH`,
    )
}

export function checkHost(manifest: Manifest, warnings: string[]): void {
  if (manifest.host.arch !== arch())
    throw new RestoreRefusedError(`the bundle was made on ${manifest.host.arch}; this host is ${arch()}`, 'restore it on a host of the same architecture')
  if (manifest.host.kernelRelease !== release())
    warnings.push(`kernel differs: dumped on ${manifest.host.kernelRelease}, restoring on ${release()}; criu may refuse features this kernel lacks`)
}

/** Read between two looks at the deadline and the cancel signal: a few ms of disk. */
const HASH_CHUNK = 1 << 20

/**
 * The sha256 of a host file, read in chunks with the --timeout and the cancel signal asked between any two: a file
 * named by a bundle may be of any size (a 1 TiB sparse file reads as zeros for ever), and restore must still stop at
 * its deadline or a SIGINT/SIGTERM. Opened non-blocking, so a FIFO put in its place after the stat cannot hang the
 * open, and judged a regular file by the fstat of what was opened.
 */
export async function sha256Within(path: string, budget: OperationBudget, during: string): Promise<string> {
  const stop = () => {
    budget.checkCancelled(during)
    budget.remainingMs(Number.POSITIVE_INFINITY)
  }
  stop()
  const fh = await budget.unlessStopped(open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY), during)
  try {
    if (!(await fh.stat()).isFile()) throw new RestoreRefusedError(`${path} on this host is not a regular file`, 'the bundle names something that is not a program; nothing was restored')
    const hash = createHash('sha256')
    const buf = Buffer.allocUnsafe(HASH_CHUNK)
    // The whole read is also raced against the budget: one read stuck on a dead network filesystem must not hold it.
    await budget.unlessStopped(
      (async () => {
        for (;;) {
          stop()
          const { bytesRead } = await fh.read(buf, 0, HASH_CHUNK, null)
          if (bytesRead === 0) return
          hash.update(buf.subarray(0, bytesRead))
        }
      })(),
      during,
    )
    return hash.digest('hex')
  } finally {
    await fh.close().catch(() => undefined)
  }
}

/** criu checks that files the process had open or mapped still have their size at dump time; check first. */
/**
 * The executable must be the one dumped, and every file the tree had open must have its size at the dump (criu refuses
 * any other). A regular file that changed size can be given to `privateCopy`, which takes it (an isolated copy gets a
 * private copy of it, cut back to that size) by returning true; otherwise it is a refusal naming it.
 */
export async function checkFiles(
  manifest: Manifest,
  budget: OperationBudget,
  imageFiles?: { path: string; size: number }[],
  privateCopy?: (file: { path: string; size: number }) => boolean,
): Promise<void> {
  const t = manifest.target
  // A container's paths are inside its root filesystem.
  const onHost = (p: string): string => (manifest.container ? join(manifest.container.rootfs, p) : p)
  const size = (p: string): number | undefined => {
    try {
      return statSync(onHost(p)).size
    } catch {
      return undefined
    }
  }
  if (t.exe && !t.exe.endsWith(' (deleted)')) {
    const now = size(t.exe)
    if (now === undefined) throw new RestoreRefusedError(`executable ${t.exe} is missing on this host`, 'install the same build of the program')
    // Opened as a regular file only: a manifest naming /dev/zero or a FIFO would be hashed forever.
    const st = statSync(onHost(t.exe))
    if (!st.isFile()) throw new RestoreRefusedError(`executable ${t.exe} on this host is not a regular file`, 'the bundle names something that is not a program; nothing was restored')
    // A size that differs needs no hash to tell; and an executable too large to hash at dump (no sha256) still has
    // its size recorded.
    if (t.exeSize !== null && st.size !== t.exeSize)
      throw new RestoreRefusedError(`executable ${t.exe} differs from the one dumped (${st.size} bytes now, ${t.exeSize} at dump)`, 'restore the same build of the program')
    if (t.exeSha256) {
      const sha256 = await sha256Within(onHost(t.exe), budget, `hashing the executable ${t.exe}`)
      if (sha256 !== t.exeSha256)
        throw new RestoreRefusedError(`executable ${t.exe} differs from the one dumped (sha256 changed)`, 'restore the same build of the program')
    }
  }
  // The sizes to match are criu's, from its images, for every process of the tree: it recorded them at the freeze and
  // will refuse any other. The manifest's (read before the freeze, for the root only) are the fallback.
  const files = imageFiles ?? [...t.openFiles, ...t.mappedFiles]
  for (const f of files) {
    // A file deleted while open (a ghost, a memfd, an unlinked fifo) is carried in criu's own images: nothing on this
    // host has to match it.
    if (f.path.endsWith(' (deleted)') || f.path.startsWith('/memfd:')) continue
    const now = size(f.path)
    if (now === undefined) {
      if (imageFiles) continue // criu knows whether it carries it (a ghost) or needs it, and says which
      throw new RestoreRefusedError(`file ${f.path} that the process had open is missing`, 'put it back before restoring')
    }
    if (now !== f.size && !(privateCopy && statSync(onHost(f.path)).isFile() && privateCopy(f)))
      throw new RestoreRefusedError(
        `file ${f.path} that the process had open changed size (${now} bytes now, ${f.size} at dump)`,
        'criu would refuse it: restore the file as it was, or restore on a host where it is unchanged',
      )
  }
}

/**
 * Every pid the tree needs (processes and threads) must be free. A pid is also held while it is any live process's
 * process group or session id, or by a zombie: those make criu fail with "Can't fork for N: File exists".
 */
export function checkPidsFree(manifest: Manifest): void {
  const needed = new Set<number>([...manifest.target.treePids, ...manifest.target.threadIds])
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const pid = Number(name)
    const s = readStat(pid)
    if (!s) continue
    const tids = needed.has(pid) ? [pid] : []
    let why: string | undefined
    if (tids.length > 0) why = `pid ${pid} is taken by process ${pid} (${s.comm}${s.state === 'Z' ? ', a zombie' : ''})`
    else if (needed.has(s.pgrp)) why = `pid ${s.pgrp} is still a process group id, held by process ${pid} (${s.comm})`
    else if (needed.has(s.session)) why = `pid ${s.session} is still a session id, held by process ${pid} (${s.comm})`
    if (!why) {
      try {
        const taken = readdirSync(`/proc/${pid}/task`).map(Number).find((tid) => needed.has(tid))
        if (taken !== undefined) why = `pid ${taken} is taken by a thread of process ${pid} (${s.comm})`
      } catch {
        // gone
      }
    }
    if (why) throw new RestoreRefusedError(why, 'stop that process first, or restore into a new pid namespace with --new-pidns')
  }
}

const show = (v: ThreadCreds[keyof ThreadCreds]): string => (Array.isArray(v) ? `[${v.join(',')}]` : String(v))

/** Each field where two threads' credentials differ, as "FIELD A in the images, B in WHERE". */
function credsDiff(images: ThreadCreds | null, other: ThreadCreds | null, where: string): string[] {
  if (images === null || other === null)
    return images === other ? [] : [`${images === null ? 'no credentials (a zombie)' : 'credentials'} in the images, ${other === null ? 'none (a zombie)' : 'credentials'} in ${where}`]
  return THREAD_CRED_FIELDS.filter((f) => show(images[f]) !== show(other[f])).map((f) => `${f} ${show(images[f])} in the images, ${show(other[f])} in ${where}`)
}

/**
 * criu gives every thread the credentials of its own core image, not its process's: each thread of each process is
 * checked, not only the root's main thread. A v4 manifest records every thread's (threadCreds) and each must match
 * it field by field; an older one records none, so there every thread must have its own main thread's credentials.
 */
function threadCredsProblems(manifest: Manifest, images: ImageIdentity): string[] {
  const problems: string[] = []
  const recorded = new Map((manifest.processes ?? []).map((p) => [p.pid, p.threadCreds]))
  const byTid = new Map(images.threads.map((t) => [t.tid, t]))
  for (const t of images.threads) {
    const who = `process ${t.pid} thread ${t.tid}`
    if (manifest.schemaVersion >= 4) {
      const record = recorded.get(t.pid)?.find((r) => r.tid === t.tid)
      if (!record) {
        problems.push(`${who}: the manifest records no credentials for it`)
        continue
      }
      for (const d of credsDiff(t.creds, record.creds, 'the manifest')) problems.push(`${who}: ${d}`)
    } else if (t.tid !== t.pid) {
      const main = byTid.get(t.pid)
      if (!main) problems.push(`${who}: the images hold no main thread ${t.pid} to compare it with`)
      else for (const d of credsDiff(t.creds, main.creds, `its main thread`)) problems.push(`${who}: ${d}`)
    }
  }
  return problems
}

/**
 * What the images would bring back must be what the manifest says: the same tree, every thread of it with the
 * recorded credentials, the root run with the recorded uid and gid, from the recorded executable. A bundle whose
 * manifest was edited (or written for other images) is refused here, before criu runs, naming every difference.
 */
export function checkImageIdentity(manifest: Manifest, images: ImageIdentity): void {
  const t = manifest.target
  const problems: string[] = []
  const c = images.creds
  const uids = [c.uid, c.euid, c.suid]
  const gids = [c.gid, c.egid, c.sgid]
  if (uids.some((u) => u !== t.uid)) problems.push(`the images run the process as uid ${[...new Set(uids)].join('/')}, the manifest says uid ${t.uid}`)
  if (gids.some((g) => g !== t.gid)) problems.push(`the images run the process as gid ${[...new Set(gids)].join('/')}, the manifest says gid ${t.gid}`)
  problems.push(...threadCredsProblems(manifest, images))
  if (images.exe !== undefined && t.exe && !t.exe.endsWith(' (deleted)') && images.exe !== t.exe)
    problems.push(`the images' executable is ${images.exe}, the manifest says ${t.exe}`)
  const dumped = images.tree.map((p) => p.pid)
  if (manifest.processes) {
    const recorded = manifest.processes.map((p) => p.pid)
    const same = recorded.length === dumped.length && recorded.every((p) => dumped.includes(p))
    if (!same) problems.push(`the images hold processes ${dumped.join(', ')}, the manifest lists ${recorded.join(', ')}`)
  } else if (dumped[0] !== t.pid) {
    problems.push(`the images' root is pid ${dumped[0]}, the manifest's is ${t.pid}`)
  }
  if (problems.length > 0)
    throw new RestoreRefusedError(`the bundle's images do not match its manifest: ${problems.join('; ')}`, 'nothing was restored; the bundle was edited or put together from another capture')
}
