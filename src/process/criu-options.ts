// The criu options a tree needs, each with the reason a person reads in the manifest, decided from TreeFacts alone
// (a pure function: tested without a process). What criu would refuse is decided before this, in dump-plan.ts.

import { describeSocket, isTcpConnection, isTcpListener, plural, shellJobNeeded, who } from './dump-plan.js'
import type { HeldSocket } from './sockets.js'
import type { HeldLock, ProcessFacts, TreeFacts } from './tree-facts.js'

export interface CriuOptionReason {
  option: string
  reason: string
}

export interface CriuPlan {
  options: string[]
  reasons: CriuOptionReason[]
}

/** The first item across the tree and how many distinct ones there are: a socket inherited by a worker is held by two
 *  processes and is still one socket. */
function firstAcross<T>(facts: TreeFacts, pick: (p: ProcessFacts) => T[], key: (item: T) => string): { p: ProcessFacts; item: T; count: number } | undefined {
  let found: { p: ProcessFacts; item: T } | undefined
  const seen = new Set<string>()
  for (const p of facts.processes) {
    for (const item of pick(p)) {
      seen.add(key(item))
      found ??= { p, item }
    }
  }
  return found ? { ...found, count: seen.size } : undefined
}

const byInode = (s: HeldSocket) => String(s.inode)
const byLock = (l: HeldLock) => `${l.kind} ${l.device}:${l.inode} ${l.start}-${l.end}`

/** The criu dump options this tree needs, each with the fact that calls for it. */
export function chooseCriuOptions(facts: TreeFacts): CriuPlan {
  const reasons: CriuOptionReason[] = []
  const root = facts.processes[0]
  if (!root) return { options: [], reasons }

  if (shellJobNeeded(root)) {
    const why = root.session !== root.pid ? `the root ${who(root)} is not its session's leader (session ${root.session})` : `the root ${who(root)} has a controlling terminal (tty_nr ${root.ttyNr})`
    reasons.push({ option: '--shell-job', reason: `${why}: criu refuses to dump it otherwise (pstree.c "not a session leader", tty.c)` })
  }

  const conn = firstAcross(facts, (p) => p.sockets.filter(isTcpConnection), byInode)
  if (conn) {
    const s = conn.item
    reasons.push({
      option: '--tcp-established',
      reason:
        `${plural(conn.count, 'connected TCP socket')}, e.g. ${who(conn.p)} ${s.local}->${s.remote} (${s.state}): criu refuses a connected ` +
        `TCP socket without it (sk-inet.c "Connected TCP socket"); with it criu blocks the connection with netfilter while it dumps it in ` +
        `TCP repair mode, and the live process keeps it`,
    })
  }

  const listen = firstAcross(facts, (p) => p.sockets.filter(isTcpListener), byInode)
  if (listen && !conn) {
    const s = listen.item
    reasons.push({
      option: '--tcp-established',
      reason:
        `${who(listen.p)} listens on ${s.local}: a connection it accepts between this look and the stop is an established ` +
        `TCP socket criu refuses without the option (sk-inet.c "Connected TCP socket"; under load one always arrives), ` +
        `so it is given now, and the live process keeps such a connection`,
    })
  }
  if (listen) {
    const s = listen.item
    const listeners = new Map(facts.processes.flatMap((p) => p.sockets.filter(isTcpListener)).map((x) => [x.inode, x]))
    const waiting = [...listeners.values()].reduce((n, x) => n + (x.acceptBacklog ?? 0), 0)
    reasons.push({
      option: '--skip-in-flight',
      reason:
        `${who(listen.p)} listens on ${s.local}${listen.count > 1 ? ` (and ${plural(listen.count - 1, 'more listening socket')})` : ''}` +
        ` with ${waiting} connection${waiting === 1 ? '' : 's'} waiting to be accepted now: one can arrive in its accept queue at any moment (under load ` +
        `they always do), and criu refuses a listening socket with a non-empty queue otherwise (sk-inet.c "In-flight connection"); ` +
        `with it criu leaves them out of the images, and the live process, which criu leaves running, keeps and accepts them`,
    })
  }

  const treeInodes = new Set(facts.processes.flatMap((p) => p.sockets.map((s) => s.inode)))
  const extDgram = firstAcross(facts, (p) =>
    p.sockets.filter((s) => s.family === 'unix' && s.proto === 'dgram' && s.peer !== undefined && s.peer !== 0 && !treeInodes.has(s.peer) && s.peerPath !== undefined),
    byInode,
  )
  // Without ss the peers are unknown: a connected DGRAM socket may point outside (a /dev/log client does). The option
  // changes nothing for a peer inside the tree, so it is added on the chance.
  const unknownDgram =
    facts.unixPeers === 'unknown'
      ? firstAcross(facts, (p) => p.sockets.filter((s) => s.family === 'unix' && s.proto === 'dgram' && s.state === 'CONNECTED' && s.peer === undefined), byInode)
      : undefined
  if (extDgram) {
    reasons.push({
      option: '--ext-unix-sk',
      reason:
        `${who(extDgram.p)} has a ${describeSocket(extDgram.item)} whose peer is outside the tree${extDgram.count > 1 ? ` (${extDgram.count} such sockets)` : ''}: criu ` +
        `fails with "External socket is used" otherwise (sk-unix.c); with it the socket is reconnected to that path at restore`,
    })
  } else if (unknownDgram) {
    reasons.push({
      option: '--ext-unix-sk',
      reason:
        `${who(unknownDgram.p)} has a connected unix dgram socket (fd ${unknownDgram.item.fd}) whose peer could not be read (no \`ss\`); ` +
        `if it is outside the tree (a /dev/log client) criu needs the option, and it changes nothing otherwise`,
    })
  }

  const lock = firstAcross(facts, (p) => p.locks, byLock)
  if (lock) {
    const l = lock.item
    reasons.push({
      option: '--file-locks',
      reason:
        `${who(lock.p)} holds a ${l.kind} ${l.type} lock on inode ${l.inode} (device ${l.device}${l.fd !== undefined ? `, fd ${l.fd}` : ''})` +
        `${lock.count > 1 ? ` (${plural(lock.count, 'lock')} in the tree)` : ''}: criu fails with "Some file locks are hold by dumping tasks" ` +
        `otherwise (file-lock.c); with it the locks are dumped and taken again at restore`,
    })
  }

  return { options: reasons.map((r) => r.option), reasons }
}
