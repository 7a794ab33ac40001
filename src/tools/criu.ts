// CRIU: its version, `criu check`, and the exact dump and restore command lines snap uses.

import { readFileSync, statSync } from 'node:fs'
import { release } from 'node:os'
import { ToolError } from '../errors.js'
import { compareVersions, INSTALL_HINT, locateTool, MIN_CRIU_VERSION, parseVersion, type LocatedTool, type Version } from './locate.js'
import { queryTool } from './run.js'
import { versionAnswer } from './tool-versions.js'
import { readCacheJson, writeCacheJson } from './cache-file.js'
import { cacheDir } from '../environment.js'

/** See MIN_CRIU_VERSION: the oldest CRIU that dumps what procsnap dumps on the kernels it runs on. */
export const MIN_CRIU: Version = parseVersion(MIN_CRIU_VERSION)!

export interface CriuInfo extends LocatedTool {
  version: string
}

/** criu's version; `versionCache`: where the answer is remembered (tool-versions.ts), null to ask criu itself. */
export async function readCriuVersion(path: string, versionCache: string | null = cacheDir()): Promise<Version | undefined> {
  const r = await versionAnswer(path, versionCache)
  // "Version: 4.1.1"; a failing binary's own words may contain digits too, so require the label.
  const line = r.output.split('\n').find((l) => /^Version:/i.test(l.trim()))
  return r.ok && line ? parseVersion(line) : undefined
}

export async function findCriu(flag?: string, min: Version = MIN_CRIU, versionCache: string | null = cacheDir()): Promise<CriuInfo> {
  const located = locateTool('criu', flag)
  const version = await readCriuVersion(located.path, versionCache)
  if (!version) throw new ToolError(`${located.path} does not run or does not report a criu version`, INSTALL_HINT.criu)
  if (compareVersions(version, min) < 0)
    throw new ToolError(`criu ${version.text} at ${located.path} is too old (need >= ${min.text})`, INSTALL_HINT.criu)
  return { ...located, version: version.text }
}

export interface CriuCheck {
  ok: boolean
  /** criu's own last lines; every run here prints an rlimit "Error" and still succeeds, so judge by the exit code. */
  lines: string[]
}

export async function criuCheck(path: string): Promise<CriuCheck> {
  const r = await queryTool(path, ['check'], 60000)
  return { ok: r.ok, lines: r.output.split('\n').filter((l) => l.trim()).slice(-5) }
}

/**
 * What a `criu check` answer depends on: the binary (by path, size, modification time and inode, so a binary replaced
 * in place is checked again), its version, the kernel and this boot (modules and sysctls loaded since are another
 * boot's business only after a reboot; CHECK_REMEMBERED_MS bounds the rest).
 */
export interface CriuCheckKey {
  path: string
  size: number
  mtimeNs: string
  ino: string
  version: string
  kernel: string
  bootId: string
}

export const CHECK_CACHE_FILE = 'criu-check.json'
const CHECK_CACHE_FORMAT = 'procsnap-criu-check/1'
/** A cache file larger than this is not one snap wrote: it is not read. */
const CHECK_CACHE_MAX_BYTES = 4096
/** A passed check is trusted this long at most, even on the same boot with the same binary. */
export const CHECK_REMEMBERED_MS = 24 * 60 * 60 * 1000

export function criuCheckKey(criu: { path: string; version: string }): CriuCheckKey | undefined {
  try {
    const st = statSync(criu.path, { bigint: true })
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    if (!bootId) return undefined
    return { path: criu.path, size: Number(st.size), mtimeNs: String(st.mtimeNs), ino: String(st.ino), version: criu.version, kernel: release(), bootId }
  } catch {
    return undefined // nothing to key the answer by: criu check runs, and is not remembered
  }
}

function sameKey(a: CriuCheckKey, b: Record<string, unknown>): boolean {
  return (Object.keys(a) as (keyof CriuCheckKey)[]).every((k) => a[k] === b[k])
}

/**
 * When `criu check` last passed for this key, read from the cache in `dir`; undefined when there is none, or when it
 * is unreadable, too large, not this user's own file, writable by anyone else, for another key, or too old. Never
 * throws: a cache that cannot be trusted only means criu check runs.
 */
export function readRememberedCheck(dir: string, key: CriuCheckKey, now = Date.now()): { checkedAt: string } | undefined {
  const entry = readCacheJson(dir, CHECK_CACHE_FILE, CHECK_CACHE_MAX_BYTES) as Record<string, unknown> | undefined
  if (entry?.format !== CHECK_CACHE_FORMAT || entry.ok !== true || typeof entry.key !== 'object' || entry.key === null) return undefined
  if (!sameKey(key, entry.key as Record<string, unknown>)) return undefined
  const at = typeof entry.checkedAt === 'string' ? Date.parse(entry.checkedAt) : NaN
  if (!(at <= now && now - at < CHECK_REMEMBERED_MS)) return undefined
  return { checkedAt: entry.checkedAt as string }
}

/** Records that `criu check` passed for this key; written beside and renamed into place, 0600. Failures are ignored:
 *  the next run checks again. */
export function rememberCheck(dir: string, key: CriuCheckKey, now = Date.now()): void {
  writeCacheJson(dir, CHECK_CACHE_FILE, { format: CHECK_CACHE_FORMAT, ok: true, key, checkedAt: new Date(now).toISOString() })
}

/**
 * `criu check`, run once per criu binary, kernel and boot: a pass is remembered in `cacheDir` and not run again while
 * its key holds (it costs every dump a criu start and its probes of the kernel). A failure is never remembered: what
 * was missing may be fixed before the next run. `rememberedFrom` says when the pass that was reused was seen.
 */
export async function criuCheckOnce(criu: { path: string; version: string }, cacheDir: string | undefined): Promise<CriuCheck & { rememberedFrom?: string }> {
  const key = criuCheckKey(criu)
  const remembered = key && cacheDir !== undefined ? readRememberedCheck(cacheDir, key) : undefined
  if (remembered) return { ok: true, lines: [], rememberedFrom: remembered.checkedAt }
  const check = await criuCheck(criu.path)
  // Remembered only when the binary checked is still the one keyed before the run.
  const after = check.ok && key && cacheDir !== undefined ? criuCheckKey(criu) : undefined
  if (after && key && sameKey(key, after as unknown as Record<string, unknown>)) rememberCheck(cacheDir!, key)
  return check
}

export interface CriuDumpOptions {
  shellJob: boolean
  /** Extra options recorded in the manifest and repeated at restore where they apply. */
  extra: string[]
  /** An executable criu runs at each stage (CRTOOLS_SCRIPT_ACTION says which); not recorded, not repeated at restore. */
  actionScript?: string
  /** criu ends the tree once its images are written, its connections still in repair mode and locked. */
  kill?: boolean
}

export function criuDumpArgs(pid: number, imagesDir: string, logFile: string, o: CriuDumpOptions): string[] {
  return [
    'dump',
    '--tree', String(pid),
    '--images-dir', imagesDir,
    // criu's default after a dump is to KILL the tree: asked only for --leave killed (DumpState.criuKills). Otherwise
    // --leave-running, not --leave-stopped: snap stopped every process before criu seized it, and criu puts a task it
    // found stopped back stopped, so nothing runs before snap says so. But criu unlocks the network (takes the TCP
    // connections out of repair mode, drops its iptables rules) only when its final state is "alive": with
    // --leave-stopped the live process's connections stay dead.
    ...(o.kill ? [] : ['--leave-running']),
    '--log-file', logFile,
    '-v4',
    ...(o.shellJob ? ['--shell-job'] : []),
    ...(o.actionScript ? ['--action-script', o.actionScript] : []),
    ...o.extra,
  ]
}

/**
 * A criu action script that turns a job-control stop (SIGTSTP, SIGTTIN, SIGTTOU) into a SIGSTOP stop without letting
 * the target run. At post-dump criu still holds every thread in a ptrace stop: SIGCONT ends the group stop but wakes
 * no traced thread, SIGSTOP stays pending, and when criu detaches each thread takes the SIGSTOP before returning to
 * user space. gdb then leaves the target stopped when it detaches (it resumes a job-control-stopped one). The marker
 * file tells snap the signals were sent. It exits 0 whatever happens: criu fails the whole dump when a
 * post-dump script fails, and snap judges the conversion by the marker instead.
 */
export function stopConversionScript(pids: number[], marker: string): string {
  const quoted = `'${marker.replaceAll("'", `'\\''`)}'`
  const list = pids.join(' ')
  return [
    '#!/bin/sh',
    '# Written by snap dump for one criu run; see stopConversionScript in src/tools/criu.ts.',
    '[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] || exit 0',
    `kill -CONT ${list} && kill -STOP ${list} && echo converted > ${quoted}`,
    'exit 0',
    '',
  ].join('\n')
}

/** Options that must be given the same at restore as at dump. */
export const RESTORE_REPEATED_OPTIONS = new Set(['--shell-job', '--tcp-established', '--ext-unix-sk', '--file-locks', '--link-remap'])

export function criuRestoreArgs(imagesDir: string, logFile: string, pidfile: string, dumpOptions: string[]): string[] {
  return [
    'restore',
    '--images-dir', imagesDir,
    '--restore-detached',
    '--pidfile', pidfile,
    '--log-file', logFile,
    '-v4',
    ...dumpOptions.filter((o) => RESTORE_REPEATED_OPTIONS.has(o)),
  ]
}
