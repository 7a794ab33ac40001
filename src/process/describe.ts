// What the manifest records about the target and the host, read from /proc before the target is touched.

import { createHash } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import { hostname, release, arch, userInfo } from 'node:os'
import { sha256File } from '../bundle/hash.js'
import type { FileRecord, Manifest, TargetRecord } from '../bundle/manifest.js'
import {
  readCgroup, readCmdline, readEnviron, readLink, readMappedFiles, readNamespaces, readOpenFiles, readProcessTree,
  readStat, readStatus, listThreadIds, readBootId,
} from './proc.js'
import { TargetNotFoundError } from '../errors.js'

function fileSize(path: string): number | null {
  try {
    return statSync(path).size
  } catch {
    return null
  }
}

/** The executable as the process sees it: through /proc/PID/exe, so it works across mount namespaces. */
async function exeDigest(pid: number): Promise<{ sha256: string | null; size: number | null }> {
  try {
    const r = await sha256File(`/proc/${pid}/exe`)
    return { sha256: r.sha256, size: r.size }
  } catch {
    return { sha256: null, size: null }
  }
}

export async function describeTarget(pid: number, opts: { includeEnv: boolean }): Promise<TargetRecord> {
  const stat = readStat(pid)
  const status = readStatus(pid)
  if (!stat || !status) throw new TargetNotFoundError(pid)
  const exe = readLink(`/proc/${pid}/exe`) ?? ''
  const digest = await exeDigest(pid)
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
