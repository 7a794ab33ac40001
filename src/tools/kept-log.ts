// A failed tool's log outlives the work directory it was written in (which every failure path removes): it is copied
// to a private file in the system temp directory, and the error message names that file.

import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export function keepLog(logFile: string, label: string): string | undefined {
  if (!existsSync(logFile)) return undefined
  const dest = join(tmpdir(), `snap-${label}-${process.pid}-${Date.now()}.log`)
  try {
    writeFileSync(dest, readFileSync(logFile), { flag: 'wx', mode: 0o600 })
    return dest
  } catch {
    return undefined
  }
}
