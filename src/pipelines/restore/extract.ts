// Verify and extract: a private work directory, the bundle read once with every artifact's sha256 checked, and only
// the CRIU images written out, after its head (head.ts) has been judged.

import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { verifyAndExtract } from '../../bundle/extract.js'
import { BundleInvalidError, OutputPathError } from '../../errors.js'
import { ByteMeter, meterIntervalMs } from '../byte-meter.js'
import { checkHead } from './head.js'
import { enter, timed, type RestoreRunState } from './state.js'

export function makeWorkDir(s: RestoreRunState): void {
  const parent = s.o.workDirParent ?? tmpdir()
  try {
    s.workDir = mkdtempSync(join(parent, 'snap-restore-'))
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    throw new OutputPathError(
      `cannot make a work directory in ${parent} (${code === 'ENOENT' ? 'it does not exist' : code === 'ENOTDIR' ? 'not a directory' : code})`,
      'give --work-dir an existing directory on a filesystem with room for the images',
    )
  }
}

export async function extractImages(s: RestoreRunState, report: (line: string) => void): Promise<void> {
  enter(s, 'extracting')
  const meter = new ByteMeter(report, undefined, meterIntervalMs(s.progress.mode), 'read of the bundle: ')
  // Trust, the tree's pids and room for the images are decided on the bundle's head, before anything is written.
  const scan = await timed(s, 'verify-extract', () =>
    verifyAndExtract({
      bundle: s.o.bundle,
      into: s.workDir!,
      want: (a) => a.kind === 'criu-image',
      onHead: (head) => checkHead(s, head.manifest, head),
      onRead: (done, size) => meter.update(done, size),
    }),
  )
  if (scan.problems.length > 0)
    throw new BundleInvalidError(`${s.o.bundle} failed verification: ${scan.problems.join('; ')}`, scan.problems, 'nothing was restored')
  s.manifest = scan.manifest
  report(`${scan.manifest.artifacts.filter((a) => a.kind === 'criu-image').length} images extracted, every artifact's sha256 checked`)
  s.budget.checkCancelled('extracting')
}
