// Preflight: who the images would bring back, read from them and held to the manifest's word; the CRIU version, this
// host, the files the process had open, and the pids it needs. Nothing is started before all of it passes.

import { join } from 'node:path'
import { BundleInvalidError } from '../../errors.js'
import { readImageIdentity, type ImageIdentity } from '../../criu-images/identity.js'
import { markExited } from '../../criu-images/pstree.js'
import { checkCriuVersion, checkFiles, checkHost, checkImageIdentity, checkPidsFree } from './host-checks.js'
import { takePrivateCopy } from './isolate.js'
import { enter, keepsHostPids, manifestOf, timed, type RestoreRunState } from './state.js'

export async function preflight(s: RestoreRunState): Promise<void> {
  enter(s, 'preflight')
  const manifest = manifestOf(s)
  // The head's warnings (--allow-unsigned, ignored keys) were printed when they were found: only the preflight's own
  // are printed after it.
  const printed = s.warnings.length
  await timed(s, 'preflight', async () => {
    const images = join(s.workDir!, 'criu')
    let identity: ImageIdentity
    try {
      identity = readImageIdentity(images)
    } catch (e) {
      throw new BundleInvalidError(`${s.o.bundle}: its CRIU images cannot be read (${(e as Error).message})`, [], 'nothing was restored')
    }
    checkImageIdentity(manifest, identity)
    // A zombie of the dumped tree comes back a zombie: the check after the restore must know which tasks those are.
    try {
      s.imageTree = markExited(images, identity.tree)
    } catch (e) {
      throw new BundleInvalidError(`${s.o.bundle}: its CRIU core images cannot be read (${(e as Error).message})`, [], 'nothing was restored')
    }
    // The images, not the manifest, say which pids criu will create: any the manifest left out is claimed too.
    if (keepsHostPids(s)) s.journal?.claimPids(identity.tree.map((t) => t.pid))
    checkCriuVersion(manifest, s.criu!.version)
    checkHost(manifest, s.warnings)
    // The original may still be writing to its files (its logs): an isolated copy gets its own, as they were at the
    // dump, and never writes to the original's.
    await checkFiles(manifest, s.budget, identity.files, s.o.isolate ? (f) => takePrivateCopy(s, f) : undefined)
    // In a pid namespace of its own (a container's, --new-pidns, --isolate) the pids are free whatever the host holds.
    if (keepsHostPids(s)) checkPidsFree(manifest)
  })
  for (const w of s.warnings.slice(printed)) s.progress.warn(w)
  s.budget.checkCancelled('preflight')
}
