// `snap core BUNDLE [--pid P] -o FILE`: one process's core as a file of its own, for gdb and other tools. The core
// stored in the bundle is extracted (checked against its sha256 on the way); a process of the tree that got none
// (--cores root) has its core built from the bundle's CRIU images instead. The output is never overwritten, is
// private (0600: a core holds the process's secrets), and only gets its name once complete.

import { existsSync, linkSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { sha256File } from '../bundle/hash.js'
import { verifyAndExtract } from '../bundle/extract.js'
import type { Manifest } from '../bundle/manifest.js'
import { writeCoreFromImages } from '../corefile/index.js'
import { BundleInvalidError, OutputPathError, UsageError } from '../errors.js'

export interface CoreExportOptions {
  bundle: string
  /** The process, by the pid snap saw it under on the host; default: the root. */
  pid?: number
  output: string
}

export interface CoreExportResult {
  bundle: string
  pid: number
  output: string
  size: number
  sha256: string
  /** 'stored': the bundle's own core; 'rebuilt': built from its CRIU images. */
  source: 'stored' | 'rebuilt'
}

/** What the bundle can give for `pid`: its stored core's entry, or the images' name for the process, or nothing. */
function planFor(manifest: Manifest, pid: number): { entry: string } | { imagePid: number } {
  const entry = `core.${pid}`
  if (manifest.artifacts.some((a) => a.kind === 'core' && a.path === entry)) return { entry }
  const processes = manifest.processes ?? [{ pid: manifest.target.pid, hostPid: undefined }]
  const process_ = processes.find((p) => (p.hostPid ?? p.pid) === pid)
  const withCores = manifest.artifacts.filter((a) => a.kind === 'core').map((a) => a.path.slice(5))
  if (!process_)
    throw new UsageError(
      `process ${pid} is not in ${manifest.target.pid}'s bundle`,
      `its processes are ${processes.map((p) => p.hostPid ?? p.pid).join(', ')}${withCores.length ? `; cores are stored for ${withCores.join(', ')}` : ''}`,
    )
  if (!manifest.artifacts.some((a) => a.kind === 'criu-image'))
    throw new BundleInvalidError(`the bundle holds no core of process ${pid} and no CRIU images to build one from`, [], 'take a new dump with --cores all')
  return { imagePid: process_.pid }
}

export async function exportCore(o: CoreExportOptions): Promise<CoreExportResult> {
  const output = resolve(o.output)
  if (existsSync(output)) throw new OutputPathError(`${output} already exists`, 'choose another name; snap never overwrites a file')
  const dir = dirname(output)
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new OutputPathError(`directory ${dir} does not exist`, 'create it first, or choose another -o')
  // Beside the output, so the finished file is linked into place on the same filesystem.
  const work = mkdtempSync(join(dir, '.snap-core-'))
  try {
    let plan: ReturnType<typeof planFor> | undefined
    let pid = o.pid
    const scan = await verifyAndExtract({
      bundle: o.bundle,
      into: work,
      onHead: ({ manifest }) => {
        pid ??= manifest.target.pid
        plan = planFor(manifest, pid)
      },
      want: (a) => (plan !== undefined && 'entry' in plan ? a.path === plan.entry : a.kind === 'criu-image'),
    })
    if (scan.problems.length > 0)
      throw new BundleInvalidError(`${o.bundle} failed verification: ${scan.problems.join('; ')}`, scan.problems, 'no core was written')
    if (!plan || pid === undefined) throw new BundleInvalidError(`${o.bundle} has no manifest`, [])
    if ('entry' in plan) {
      linkSync(join(work, plan.entry), output) // never replaces a file that appeared there meanwhile
    } else {
      await writeCoreFromImages({ imagesDir: join(work, 'criu'), pid: plan.imagePid, output })
    }
    const { sha256 } = await sha256File(output)
    return { bundle: o.bundle, pid, output, size: statSync(output).size, sha256, source: 'entry' in plan ? 'stored' : 'rebuilt' }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}
