// procsnap's configuration variables. Each is PROCSNAP_NAME; the SNAP_NAME of earlier versions is still read, with a
// one-line warning, because SNAP_* is snapd's namespace on every Ubuntu host (snapd sets SNAP, SNAP_DATA, ... in each
// snap's environment). Every reader of a configuration variable goes through here, so the two can never disagree.

import { homedir } from 'node:os'
import { join } from 'node:path'
import { cliName } from './ui/cli-name.js'

/** Every configuration variable, without its prefix. */
export const CONFIG_VARIABLES = ['CRIU', 'GDB', 'PREFIX_BIN', 'TRUSTED_KEYS', 'RECIPIENTS', 'ZSTD', 'JOURNAL_DIR', 'LOG_DIR', 'CACHE_DIR'] as const
export type ConfigVariable = (typeof CONFIG_VARIABLES)[number]

export const PREFIX = 'PROCSNAP_'
/** The prefix of earlier versions: read when the new name is not set, never written. */
export const DEPRECATED_PREFIX = 'SNAP_'

/** The name to set (`PROCSNAP_CRIU`), for texts that tell the user which variable to use. */
export function variableName(name: ConfigVariable): string {
  return PREFIX + name
}

export interface ConfigValue {
  value: string
  /** The variable it came from, as set (`PROCSNAP_CRIU`, or `SNAP_CRIU` of an older setup). */
  from: string
}

const warned = new Set<string>()
let warn: (line: string) => void = (line) => {
  try {
    process.stderr.write(`${line}\n`)
  } catch {
    // stderr is gone: the value is still used
  }
}

/** Where the deprecation warning goes; for the unit tests. Returns the previous writer. */
export function setDeprecationWriter(write: (line: string) => void): (line: string) => void {
  const previous = warn
  warn = write
  return previous
}

/** Forgets which warnings were given; for the unit tests. */
export function resetDeprecationWarnings(): void {
  warned.clear()
}

/**
 * The variable's value and where it came from: PROCSNAP_NAME, else SNAP_NAME (warned about once per process), else
 * undefined. An empty value counts as unset, as it always has.
 */
export function readConfig(name: ConfigVariable, env: NodeJS.ProcessEnv = process.env): ConfigValue | undefined {
  const current = env[PREFIX + name]
  if (current) return { value: current, from: PREFIX + name }
  const old = env[DEPRECATED_PREFIX + name]
  if (!old) return undefined
  if (!warned.has(name)) {
    warned.add(name)
    warn(`${cliName()}: warning: ${DEPRECATED_PREFIX + name} is deprecated (SNAP_* belongs to snapd): rename it ${PREFIX + name}`)
  }
  return { value: old, from: DEPRECATED_PREFIX + name }
}

/** The variable's value, or undefined: see readConfig. */
export function configValue(name: ConfigVariable, env: NodeJS.ProcessEnv = process.env): string | undefined {
  return readConfig(name, env)?.value
}

/**
 * Where answers worth keeping between runs are kept (a passed `criu check`): never the journal directory, whose files
 * are each a capture in progress. $PROCSNAP_CACHE_DIR, else /var/cache/procsnap for root, else the user's cache.
 */
export function cacheDir(): string {
  const set = configValue('CACHE_DIR')
  if (set) return set
  if (process.getuid?.() === 0) return '/var/cache/procsnap'
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'procsnap')
}
