// What the manifest records about the target and the host, read from /proc before the target is touched.

import { createHash } from 'node:crypto'
import { constants, readFileSync, statSync } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { hostname, release, arch, userInfo } from 'node:os'
import type { FileRecord, Manifest, TargetRecord } from '../bundle/manifest.js'
import type { OperationBudget } from '../pipelines/budget.js'
import {
  readCgroup, readCmdline, readEnviron, readLink, readMappedFiles, readNamespaces, readOpenFiles, readProcessTree,
  readStat, readStatus, listThreadIds, readBootId,
} from './proc.js'
import { isSnapError, TargetNotFoundError } from '../errors.js'

function fileSize(path: string): number | null {
  try {
    return statSync(path).size
  } catch {
    return null
  }
}

/**
 * Hashing the executable may take at most this long: a program of several GiB hashes in a few seconds here, so more
 * means something else (a huge sparse file run as the program, a filesystem that stopped answering), and the capture
 * matters more than the hash restore would compare it with.
 */
export const EXE_HASH_MAX_MS = 10_000
/** Of what is left of --timeout, hashing gets this share: the capture needs the rest. */
export const EXE_HASH_SHARE = 0.25
/** Read between two looks at the clock and the cancel signal: about a millisecond of disk. */
const HASH_CHUNK = 1 << 20

export interface ExeDigest {
  sha256: string | null
  size: number | null
  /** Why the sha256 is null, for people: said in the dump's warnings and in its manifest. */
  notHashed?: string
}

const GiB = 1024 ** 3
function bytesText(n: number): string {
  if (n >= 1024 * GiB) return `${(n / (1024 * GiB)).toFixed(1)} TiB`
  if (n >= GiB) return `${(n / GiB).toFixed(1)} GiB`
  return `${(n / (1 << 20)).toFixed(1)} MiB`
}

/** Settles as `work` does, or with 'late' after `ms`, whichever comes first; the timer never keeps snap alive. */
function within<T>(work: Promise<T>, ms: number): Promise<T | 'late'> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), Math.max(0, ms))
    timer.unref()
  })
  return Promise.race([work, late]).finally(() => clearTimeout(timer))
}

/**
 * The sha256 of the executable, as the process sees it (through /proc/PID/exe, so across mount namespaces too), read
 * in chunks within a time of its own: at most EXE_HASH_MAX_MS, and at most EXE_HASH_SHARE of what is left of --timeout.
 * A file that cannot be read whole in that time is recorded by its size alone, and `notHashed` says what was read and
 * why it stopped. A SIGINT/SIGTERM stops the read at the next chunk and ends the dump (InterruptedError): the target
 * has not been touched yet. Opened non-blocking and judged by the fstat of what was opened, so a FIFO cannot hang it;
 * an open or a read stuck on a dead filesystem is left behind at the time limit, its descriptor closed once it returns.
 */
export async function hashExecutable(path: string, shown: string, budget?: OperationBudget, maxMs = EXE_HASH_MAX_MS): Promise<ExeDigest> {
  const during = `hashing the executable ${shown}`
  budget?.checkCancelled(during)
  const left = budget ? budget.remainingMs(Number.POSITIVE_INFINITY) : Number.POSITIVE_INFINITY
  const allowMs = Math.floor(Math.min(maxMs, left * EXE_HASH_SHARE))
  const why = allowMs < maxMs ? `a quarter of what was left of --timeout` : `the most a dump spends hashing`
  const seconds = `${(allowMs / 1000).toFixed(1)} s`
  const started = performance.now()
  const guard = <T>(work: Promise<T>) => (budget ? budget.unlessStopped(work, during) : work)

  const opening = open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY)
  let fh: FileHandle | 'late'
  try {
    fh = await guard(within(opening, allowMs))
  } catch (e) {
    // A signal or the --timeout ends the dump; a file that cannot be opened (a process gone, a kernel thread) has none.
    if (isSnapError(e)) {
      void opening.then((f) => f.close(), () => undefined)
      throw e
    }
    return { sha256: null, size: null }
  }
  if (fh === 'late') {
    void opening.then((f) => f.close(), () => undefined)
    return { sha256: null, size: null, notHashed: `executable ${shown} was not hashed: it could not be opened within the ${seconds} given to hashing (${why})` }
  }
  const file = fh
  let stop = false
  let done = 0
  let reading: Promise<'done' | 'late'> | undefined
  try {
    const st = await file.stat()
    if (!st.isFile()) return { sha256: null, size: null, notHashed: `executable ${shown} was not hashed: it is not a regular file` }
    const hash = createHash('sha256')
    const buf = Buffer.allocUnsafe(HASH_CHUNK)
    const deadline = started + allowMs
    reading = (async (): Promise<'done' | 'late'> => {
      for (;;) {
        if (stop || performance.now() >= deadline) return 'late'
        budget?.checkCancelled(during)
        const { bytesRead } = await file.read(buf, 0, HASH_CHUNK, null)
        if (bytesRead === 0) return 'done'
        hash.update(buf.subarray(0, bytesRead))
        done += bytesRead
      }
    })()
    // The whole read is raced too: one read stuck on a dead filesystem must not hold the dump.
    const outcome = await guard(within(reading, deadline - performance.now()))
    if (outcome === 'done') return { sha256: hash.digest('hex'), size: st.size }
    return {
      sha256: null,
      size: st.size,
      notHashed:
        `executable ${shown} (${bytesText(st.size)}) was not hashed: ${bytesText(done)} of it read in the ${seconds} given to hashing (${why}); ` +
        'the manifest records its size and no sha256, so restore cannot check that it runs the same build',
    }
  } catch (e) {
    if (isSnapError(e)) throw e
    return { sha256: null, size: null }
  } finally {
    stop = true
    // Closed once no read is under way: a descriptor closed under a pending read could be reused meanwhile.
    const close = () => void file.close().catch(() => undefined)
    if (reading) void reading.then(close, close)
    else close()
  }
}

export async function describeTarget(
  pid: number,
  opts: { includeEnv: boolean; budget?: OperationBudget; warn?: (line: string) => void },
): Promise<TargetRecord> {
  const stat = readStat(pid)
  const status = readStatus(pid)
  if (!stat || !status) throw new TargetNotFoundError(pid)
  const exe = readLink(`/proc/${pid}/exe`) ?? ''
  const digest = await hashExecutable(`/proc/${pid}/exe`, exe || `of process ${pid}`, opts.budget)
  if (digest.notHashed) opts.warn?.(digest.notHashed)
  const env = readEnviron(pid)
  const files = (paths: string[]): FileRecord[] =>
    paths.map((path) => ({ path, size: fileSize(path) ?? 0 }))
  const rss = /(\d+)/.exec(status['VmRSS'] ?? '')
  const record: TargetRecord = {
    pid,
    ppid: stat.ppid,
    pgid: stat.pgrp,
    sid: stat.session,
    ttyNr: stat.ttyNr,
    comm: stat.comm,
    exe,
    exeSha256: digest.sha256,
    exeSize: digest.size,
    cmdline: readCmdline(pid),
    cwd: readLink(`/proc/${pid}/cwd`) ?? null,
    uid: Number((status['Uid'] ?? '0').split(/\s+/)[0]),
    gid: Number((status['Gid'] ?? '0').split(/\s+/)[0]),
    startTime: stat.startTime,
    threads: stat.numThreads,
    threadIds: listThreadIds(pid),
    vmRssKiB: rss?.[1] ? Number(rss[1]) : null,
    cgroup: readCgroup(pid),
    namespaces: readNamespaces(pid),
    envNames: env.map(([k]) => k),
    openFiles: files(readOpenFiles(pid).map((f) => f.path)).filter((f, i, all) => all.findIndex((g) => g.path === f.path) === i),
    mappedFiles: files(readMappedFiles(pid)),
    treePids: readProcessTree(pid),
  }
  if (opts.includeEnv) record.env = Object.fromEntries(env)
  return record
}

export function describeHost(): Manifest['host'] {
  let machineIdSha256: string | null = null
  try {
    // The machine id is a stable secret-ish identifier; its hash identifies the host without disclosing it.
    machineIdSha256 = createHash('sha256').update(readFileSync('/etc/machine-id', 'utf8').trim()).digest('hex')
  } catch {
    machineIdSha256 = null
  }
  return { hostname: hostname(), kernelRelease: release(), arch: arch(), bootId: readBootId(), machineIdSha256 }
}

export function describeCustody(startedAt: Date): Manifest['custody'] {
  let user = String(process.getuid?.() ?? '')
  try {
    user = userInfo().username
  } catch {
    // no passwd entry for this uid
  }
  return { uid: process.getuid?.() ?? 0, user, argv: process.argv.slice(2), cwd: process.cwd(), startedAt: startedAt.toISOString() }
}
