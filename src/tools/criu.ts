// CRIU: its version, `criu check`, and the exact dump and restore command lines snap uses.

import { ToolError } from '../errors.js'
import { compareVersions, INSTALL_HINT, locateTool, MIN_CRIU_VERSION, parseVersion, type LocatedTool, type Version } from './locate.js'
import { queryTool } from './run.js'

/** See MIN_CRIU_VERSION: the oldest CRIU that dumps what procsnap dumps on the kernels it runs on. */
export const MIN_CRIU: Version = parseVersion(MIN_CRIU_VERSION)!

export interface CriuInfo extends LocatedTool {
  version: string
}

export async function readCriuVersion(path: string): Promise<Version | undefined> {
  const r = await queryTool(path, ['--version'])
  // "Version: 4.1.1"; a failing binary's own words may contain digits too, so require the label.
  const line = r.output.split('\n').find((l) => /^Version:/i.test(l.trim()))
  return r.ok && line ? parseVersion(line) : undefined
}

export async function findCriu(flag?: string, min: Version = MIN_CRIU): Promise<CriuInfo> {
  const located = locateTool('criu', flag)
  const version = await readCriuVersion(located.path)
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

export interface CriuDumpOptions {
  shellJob: boolean
  /** Extra options recorded in the manifest and repeated at restore where they apply. */
  extra: string[]
  /** An executable criu runs at each stage (CRTOOLS_SCRIPT_ACTION says which); not recorded, not repeated at restore. */
  actionScript?: string
}

export function criuDumpArgs(pid: number, imagesDir: string, logFile: string, o: CriuDumpOptions): string[] {
  return [
    'dump',
    '--tree', String(pid),
    '--images-dir', imagesDir,
    // criu's default after a dump is to KILL the tree. --leave-running, not --leave-stopped: snap stopped every
    // process before criu seized it, and criu puts a task it found stopped back stopped, so nothing runs before snap
    // says so. But criu unlocks the network (takes the TCP connections out of repair mode, drops its iptables rules)
    // only when its final state is "alive": with --leave-stopped the live process's connections stay dead.
    '--leave-running',
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
