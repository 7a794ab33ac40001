// Finds criu and gdb: --criu/--gdb flag, then PROCSNAP_CRIU/PROCSNAP_GDB, then snap's own prefix, then PATH (with the sbin
// directories root expects).

import { accessSync, constants, statSync } from 'node:fs'
import { delimiter, isAbsolute, join, resolve } from 'node:path'
import { configValue, readConfig, variableName } from '../environment.js'
import { ToolError } from '../errors.js'

export type ToolName = 'criu' | 'gdb'

/** The sbin and bin directories a root shell has, searched after PATH (PATH under sudo or cron may lack them). */
export const EXTRA_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']
/**
 * Where `npm run setup` (and the package) put the criu and gdb snap needs when the system's are too old: CRIU 4.2,
 * and a gdb that reads this CPU's AVX-512 layout. Searched before PATH, so the system's own tools stay as they were
 * for everything else on the host. PROCSNAP_PREFIX_BIN moves it.
 */
export const DEFAULT_PREFIX_BIN = '/opt/procsnap/bin'

export function prefixBin(): string {
  return configValue('PREFIX_BIN') ?? DEFAULT_PREFIX_BIN
}

/**
 * The oldest CRIU procsnap runs: 4.1 cannot dump a process holding an AF_INET socket on recent kernels. The one
 * place it is written: scripts/setup.sh reads this line, and doctor and every command judge criu by it.
 */
export const MIN_CRIU_VERSION = '4.2'

export const INSTALL_HINT: Record<ToolName, string> = {
  criu: `install CRIU >= ${MIN_CRIU_VERSION} (\`npm run setup\` does it without upgrading the system) or pass --criu PATH`,
  gdb: 'install gdb (`apt-get install gdb`) or pass --gdb PATH',
}

/** Where a --criu/--gdb flag's default comes from, in the order locateTool looks, for the flag's help. */
export function toolDefaults(name: ToolName): string {
  return `default: $${variableName(name === 'criu' ? 'CRIU' : 'GDB')}, then ${join(DEFAULT_PREFIX_BIN, name)}, then PATH`
}

export function isExecutableFile(p: string): boolean {
  try {
    if (!statSync(p).isFile()) return false
    accessSync(p, constants.X_OK)
    return true
  } catch {
    return false
  }
}

export interface LocatedTool {
  name: ToolName
  path: string
  /** Where the path came from, for doctor and the manifest. */
  source: 'flag' | 'env' | 'prefix' | 'PATH'
}

export function locateTool(name: ToolName, flag?: string): LocatedTool {
  const fromEnv = flag === undefined ? readConfig(name === 'criu' ? 'CRIU' : 'GDB') : undefined
  const explicit = flag ?? fromEnv?.value
  if (explicit !== undefined) {
    const p = isAbsolute(explicit) ? explicit : resolve(explicit)
    if (!isExecutableFile(p)) {
      const how = flag !== undefined ? `--${name}` : fromEnv!.from
      throw new ToolError(`${name} not found at ${p} (from ${how})`, INSTALL_HINT[name])
    }
    return { name, path: p, source: flag !== undefined ? 'flag' : 'env' }
  }
  const inPrefix = join(prefixBin(), name)
  if (isExecutableFile(inPrefix)) return { name, path: inPrefix, source: 'prefix' }
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...EXTRA_DIRS]
  for (const dir of dirs) {
    const p = join(dir, name)
    if (isExecutableFile(p)) return { name, path: p, source: 'PATH' }
  }
  throw new ToolError(`${name} not found on PATH`, INSTALL_HINT[name])
}

export interface Version {
  major: number
  minor: number
  patch: number
  text: string
}

export function parseVersion(text: string): Version | undefined {
  const m = /(\d+)\.(\d+)(?:\.(\d+))?/.exec(text)
  if (!m) return undefined
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3] ?? 0), text: m[0] }
}

export function compareVersions(a: Version, b: Version): number {
  return a.major - b.major || a.minor - b.minor || a.patch - b.patch
}
