// A copy's unix sockets. A socket bound to a path is found through the file system, which the copy shares with the
// host whatever its network namespace: criu restoring a listener unlinks the path and binds it again, and from then
// on every client of the original that connects there reaches the copy (seen: a python server's clients, connecting
// to its socket file, were all answered by the isolated copy, and once the copy ended, refused). So, in the copy's
// own mount namespace, each directory holding a socket the tree listened on gets an overlay: the host's directory
// underneath, read as it is, and what the copy changes there (the unlink, its own socket file, anything else it
// writes) in a tmpfs only the copy sees.
// The other way round, a copy must not reach the host's services through their socket files (a database's, the
// container runtime's): each socket path bound on the host is covered, in the copy's mount namespace only, by
// /dev/null, where a connect() is refused (a socket below an overlay is refused already: overlayfs does not pass a
// connect() through to the socket underneath). A peer the images connect a socket to again (criu --ext-unix-sk, a
// datagram socket such as /dev/log's) is left reachable, said so, and bound through an overlay on its directory:
// unreachable, criu could not restore the copy.

import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { Manifest } from '../../bundle/manifest.js'
import { externalUnixPeers } from '../../criu-images/files.js'
import { readImageFile } from '../../criu-images/image-file.js'
import { RestoreRefusedError } from '../../errors.js'
import { parseUnixTable } from '../../process/net-tables.js'
import { readTextFile } from '../../process/proc.js'
import { shellQuote } from '../../tools/run.js'

/** More socket paths than this on a host is not a host this was written for: the rest are not covered, and said so. */
const MAX_COVERED = 4096

export interface UnixSocketSetup {
  /** Shell lines for the copy's mount namespace, before criu. */
  lines: string[]
  /** What the copy can still reach, for the restore's warnings. */
  warnings: string[]
}

/** The paths the tree's unix sockets listened on, as the manifest recorded them (abstract ones are the network
 *  namespace's own, and so already the copy's). */
export function listenedSocketPaths(manifest: Manifest): string[] {
  const out = new Set<string>()
  for (const p of manifest.processes ?? [])
    for (const k of p.sockets ?? []) if (k.proto.startsWith('unix/') && k.state === 'LISTEN' && k.local.startsWith('/')) out.add(k.local)
  return [...out]
}

const under = (path: string, dir: string) => path.startsWith(dir.endsWith('/') ? dir : `${dir}/`)

/**
 * The private layers over the tree's socket directories, each upper layer on a tmpfs mounted under `dir` (the host's
 * view of `dir` never holds it), the external peers below them bound through, then the covers over the host's other
 * socket paths. `imagesDir` holds the extracted images (files.img names the external peers).
 */
export function unixSocketSetup(manifest: Manifest, dir: string, imagesDir: string): UnixSocketSetup {
  const own = listenedSocketPaths(manifest)
  const files = existsSync(join(imagesDir, 'files.img')) ? readImageFile(join(imagesDir, 'files.img'), false) : undefined
  const peers = files ? externalUnixPeers(files) : []
  const lines: string[] = []
  const dirs = [...new Set(own.map((p) => dirname(p)))].sort()
  dirs.forEach((d, i) => {
    if (/[,:\\]/.test(d) || d === '/')
      throw new RestoreRefusedError(
        `the tree listened on a unix socket in ${d}, which an isolated copy cannot be given a private layer of`,
        'restore it without --isolate once the original is stopped',
      )
    const layer = `${dir}/socket-dir-${i}`
    const pinned = peers.filter((p) => under(p, d))
    lines.push(
      [
        `mkdir -p -- ${shellQuote(layer)}`,
        `mount -t tmpfs -o mode=0700 tmpfs ${shellQuote(layer)}`,
        `mkdir -- ${shellQuote(`${layer}/upper`)} ${shellQuote(`${layer}/work`)}`,
        // Each peer's socket held by a bind mount before the overlay hides it, and bound again over the overlay.
        ...pinned.map((p, k) => `touch -- ${shellQuote(`${layer}/peer-${k}`)} && mount --bind -- ${shellQuote(p)} ${shellQuote(`${layer}/peer-${k}`)}`),
        `mount -t overlay overlay -o ${shellQuote(`lowerdir=${d},upperdir=${layer}/upper,workdir=${layer}/work`)} ${shellQuote(d)}`,
        ...pinned.map((p, k) => `mount --bind -- ${shellQuote(`${layer}/peer-${k}`)} ${shellQuote(p)}`),
      ].join(' && '),
    )
  })
  // No /proc/net/unix: nothing listed, nothing covered, and said so below.
  const table = readTextFile('/proc/self/net/unix') ?? ''
  const skip = new Set([...own, ...peers])
  const hostPaths = [...new Set(parseUnixTable(table).flatMap((r) => (r.path?.startsWith('/') ? [r.path] : [])))]
    .filter((p) => !skip.has(p) && !dirs.some((d) => under(p, d)))
    .sort()
  const covered = hostPaths.slice(0, MAX_COVERED)
  if (covered.length > 0) lines.push(`for p in ${covered.map(shellQuote).join(' ')}; do if [ -S "$p" ]; then mount --bind /dev/null "$p" || exit 1; fi; done`)
  const warnings = peers.map((p) => `the copy is connected to ${p} on the host again, as the original was (criu restores that connection): what it sends there reaches that service`)
  if (!table) warnings.push("the host's unix sockets could not be listed (/proc/net/unix): the copy can connect to their paths")
  if (hostPaths.length > covered.length) warnings.push(`${hostPaths.length - covered.length} of the host's unix socket paths are not covered in the copy (past ${MAX_COVERED}): it can connect to those`)
  return { lines, warnings }
}
