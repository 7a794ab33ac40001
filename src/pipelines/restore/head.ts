// The head of the bundle, decided on before a byte of it is written: a signature by a trusted key (or --allow-unsigned,
// said out loud), a bundle that holds a checkpoint at all, the lock on the pids it will take, and room for its images.

import { statfsSync } from 'node:fs'
import type { Manifest } from '../../bundle/manifest.js'
import { humanBytes } from '../../bundle/output-path.js'
import { judgeTrust } from '../../bundle/trust.js'
import { RestoreRefusedError } from '../../errors.js'
import { Journal } from '../journal.js'
import { checkPidsFree } from './host-checks.js'
import { checkOriginalAbsent } from './isolate.js'
import { keepsHostPids, warn, type RestoreRunState } from './state.js'

export function checkHead(s: RestoreRunState, manifest: Manifest, head: { manifestBytes: Buffer; signature?: Buffer }): void {
  s.manifest = manifest
  checkTrust(s, head)
  if (!manifest.tools.criu || manifest.mode === 'core-only')
    throw new RestoreRefusedError(`${s.o.bundle} holds cores only (taken with --core-only): there is no checkpoint to restore`, 'open its cores with gdb instead')
  // A container comes back in the namespaces criu's images describe, with its runtime's mounts: --isolate would not
  // be what seals it off, and saying it did would be a lie.
  if (s.o.isolate && manifest.container)
    throw new RestoreRefusedError(`${s.o.bundle} holds a container (its root ${manifest.container.rootfs}): --isolate restores host processes only`, 'restore it without --isolate where its runtime gives it its own network')
  // A copy beside a running original answers its clients and reaches its peers: only an isolated one may run there.
  if (!s.o.isolate) checkOriginalAbsent(manifest, s.o.newPidns)
  lockTree(s, manifest)
  checkRoom(s, manifest)
}

function checkTrust(s: RestoreRunState, head: { manifestBytes: Buffer; signature?: Buffer }): void {
  const verdict = judgeTrust(s.o.bundle, head, { key: s.o.publicKey, allowUnsigned: s.o.allowUnsigned, warn: (line) => warn(s, line) })
  s.signature = verdict.signature
  if (verdict.trusted) s.signedBy = verdict.by
  else warn(s, verdict.warning)
}

/**
 * One restore of a tree at a time: a second restore of the same bundle (or of another capture of the same pid) stops
 * here, so its clean-up can never kill the first one's restored process. The journal also lets `recover` clean up
 * after a restore that was killed. Every pid the tree will take is claimed before it is checked free: a dump of a
 * process that gets one of them, or another restore of a tree sharing one, stops at the claim. In a pid namespace of
 * its own the tree takes no pid of the host's that could be known now.
 */
function lockTree(s: RestoreRunState, manifest: Manifest): void {
  s.journal = Journal.open({
    operation: 'restore',
    target: { pid: manifest.target.pid, startTime: 0, bootId: manifest.host.bootId },
    originalState: 'running',
    restoreTo: 'running',
    step: 'extracting',
    touched: false,
    output: null,
    partialPath: null,
    workDir: s.workDir ?? null,
  })
  if (keepsHostPids(s)) {
    s.journal.claimPids(manifest.target.treePids)
    checkPidsFree(manifest)
  }
}

function checkRoom(s: RestoreRunState, manifest: Manifest): void {
  const need = manifest.artifacts.filter((a) => a.kind === 'criu-image').reduce((n, a) => n + a.size, 0)
  const st = statfsSync(s.workDir!)
  const free = Number(st.bavail) * Number(st.bsize)
  if (need > free)
    throw new RestoreRefusedError(
      `the bundle's images need ${humanBytes(need)} and ${s.workDir} has ${humanBytes(free)} free`,
      'free space, or give --work-dir on a larger filesystem',
    )
}
