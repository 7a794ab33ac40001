// gdb: its version and the gcore command line. We run gdb directly with the commands the gcore script uses, so we
// know which gdb runs and the core lands where we say.

import { ToolError } from '../errors.js'
import { compareVersions, INSTALL_HINT, locateTool, parseVersion, type LocatedTool, type Version } from './locate.js'
import { versionAnswer } from './tool-versions.js'
import { cacheDir } from '../environment.js'

export const MIN_GDB: Version = { major: 9, minor: 0, patch: 0, text: '9.0' }

export interface GdbInfo extends LocatedTool {
  version: string
}

/** `versionCache`: where gdb's answer to --version is remembered (tool-versions.ts), null to ask gdb itself. */
export async function findGdb(flag?: string, min: Version = MIN_GDB, versionCache: string | null = cacheDir()): Promise<GdbInfo> {
  const located = locateTool('gdb', flag)
  const r = await versionAnswer(located.path, versionCache)
  const first = r.output.split('\n')[0] ?? ''
  const version = r.ok && /gdb/i.test(first) ? parseVersion(first.replace(/\([^)]*\)/g, '')) : undefined
  if (!version) throw new ToolError(`${located.path} does not run or does not report a gdb version`, INSTALL_HINT.gdb)
  if (compareVersions(version, min) < 0)
    throw new ToolError(`gdb ${version.text} at ${located.path} is too old (need >= ${min.text})`, INSTALL_HINT.gdb)
  return { ...located, version: version.text }
}

/** gdb waiting for commands on stdin; the commands are those of the gcore script. */
export function gdbSessionArgs(): string[] {
  return [
    '--nx', '--quiet', '--readnever',
    '-iex', 'set debuginfod enabled off',
    '-iex', 'set confirm off',
    '-ex', 'set pagination off', '-ex', 'set height 0', '-ex', 'set width 0',
  ]
}

/**
 * One gdb takes every core in turn (a tree costs one gdb start-up), a process at a time: attach, gcore, detach, then
 * a marker file gdb writes itself (`dump binary value`, no shell) once it has let go of the process.
 */
export function gcoreCommandsFor(pid: number, file: string, marker: string): string {
  return `attach ${pid}\ngcore ${file}\ndetach\ndump binary value ${marker} 1\n`
}
