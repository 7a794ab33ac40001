// criu's network lock: while it dumps established TCP connections, criu drops every packet of theirs that it did not
// mark itself (SOCCR_MARK, 0xc114), so that no byte moves while the sockets are read in repair mode. criu removes the
// lock when it finishes, but a criu that dies (killed by a deadline, the OOM killer, a crash) leaves it in place and
// the live service's connections hang behind it. This module names the lock a criu run sets, finds it on the host,
// and removes it.
//
// criu's two methods (criu/net.c, criu/netfilter.c). nftables: one table per criu run, `inet CRIU-<run id>` cut to 31
// characters by criu's buffer, the run id being the uuid criu logs first ("CRIU run id = ..."), each connection an
// element added by its own libnftables call; past about 250 connections criu aborts there (`bit out of range 0 -
// FD_SETSIZE on fd_set`: it keeps a descriptor per connection, and libnftables' select() cannot take one above 1023).
// iptables: two rules per connection, `-m mark ! --mark 0xc114 ... -j DROP` in INPUT and OUTPUT, added and removed by
// running iptables twice per connection (9.5 s for 100 connections here).
//
// So for a tree in the host's network namespace snap takes the lock itself, the same rules as criu's nftables lock in
// one table of its own (`inet procsnap-<snap pid>-<snap start time>`), written in one nft transaction once the tree
// is stopped, and deleted in one once criu is done; criu is told `--network-lock skip`. The table names its owner, so
// `snap recover` and `snap doctor` know whose it is.

import { existsSync } from 'node:fs'
import type { TreeConnection } from '../process/sockets.js'
import { queryTool } from './run.js'

export type NetworkLockMethod = 'nftables' | 'iptables' | 'skip' | 'snap'

/** What a dump's criu run locks with, and how to find it afterwards. */
export interface NetworkLockRecord {
  method: NetworkLockMethod
  /** criu's own log: the run id (hence the nftables table) is read from it. */
  criuLog: string
  /** The tree's TCP connections, local and remote as /proc shows them ("127.0.0.1:8080"): the iptables rules
   *  criu adds name them. */
  connections: { local: string; remote: string }[]
  /** method 'snap': snap's own table (inet family). */
  table?: string
}

const SOCCR_MARK = '0xc114'
const NFT = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft']
const IPTABLES = [
  ['/usr/sbin/iptables', '/sbin/iptables', '/usr/bin/iptables'],
  ['/usr/sbin/ip6tables', '/sbin/ip6tables', '/usr/bin/ip6tables'],
]

export function nftProgram(): string | undefined {
  return NFT.find((p) => existsSync(p))
}

/** The method named in criu options given by the person (`--network-lock X` or `--network-lock=X`), if any. */
export function networkLockGiven(options: string[]): NetworkLockMethod | undefined {
  for (let i = 0; i < options.length; i++) {
    const o = options[i]!
    if (o.startsWith('--network-lock=')) return o.slice('--network-lock='.length) as NetworkLockMethod
    if (o === '--network-lock' && options[i + 1] !== undefined) return options[i + 1] as NetworkLockMethod
  }
  return undefined
}

/** "CRIU run id = 2da4abee-..." is criu's first log line (criu/util.c util_init). */
export function criuRunId(logText: string): string | undefined {
  return /CRIU run id = ([0-9a-f-]+)/.exec(logText)?.[1]
}

/** The table criu 4.2 makes for a run: `inet CRIU-<run id>` printed into a 32-byte buffer (nftables_get_table). */
export function nftTableOf(runId: string): string {
  return `inet CRIU-${runId}`.slice(0, 31).slice('inet '.length)
}

/** Does criu's nftables lock work here: criu built with libnftables and the kernel's nf_tables there. */
export async function criuSupportsNftables(criu: string): Promise<boolean> {
  const r = await queryTool(criu, ['check', '--feature', 'nftables'], 30_000)
  return r.ok && /nftables is supported/.test(r.output)
}

/** The inet tables on the host whose names match (the names, without the family). */
async function nftTables(name: RegExp): Promise<string[]> {
  const nft = nftProgram()
  if (!nft) return []
  const r = await queryTool(nft, ['list', 'tables', 'inet'])
  if (!r.ok) return []
  return r.output
    .split('\n')
    .map((l) => /^table inet (\S+)\s*$/.exec(l.trim())?.[1])
    .filter((t): t is string => t !== undefined && name.test(t))
}

/** The CRIU-* tables on the host: criu's nftables locks. */
export function nftCriuTables(): Promise<string[]> {
  return nftTables(/^CRIU-[0-9a-f-]+$/)
}

export interface LockRule {
  program: string
  /** The rule as `iptables -S` prints it, starting with -A CHAIN. */
  spec: string
}

/** Every rule of criu's iptables lock on the host (filter table): a DROP for packets not carrying criu's mark. */
export async function iptablesCriuRules(): Promise<LockRule[]> {
  const out: LockRule[] = []
  for (const paths of IPTABLES) {
    const program = paths.find((p) => existsSync(p))
    if (!program) continue
    const r = await queryTool(program, ['-w', '-S'])
    if (!r.ok) continue
    for (const line of r.output.split('\n'))
      if (line.startsWith('-A ') && line.includes(`! --mark ${SOCCR_MARK}`) && /-j DROP\b/.test(line)) out.push({ program, spec: line.trim() })
  }
  return out
}

function hostPort(addr: string): { host: string; port: string } | undefined {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(addr)
  return m ? { host: m[1]!.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, '$1'), port: m[2]! } : undefined
}

/** Is this rule one criu adds for this connection (either direction: criu locks both)? */
export function ruleLocksConnection(spec: string, c: { local: string; remote: string }): boolean {
  const a = hostPort(c.local)
  const b = hostPort(c.remote)
  if (!a || !b) return false
  const field = (flag: string) => new RegExp(`${flag} (\\S+)`).exec(spec)?.[1]?.replace(/\/(32|128)$/, '')
  const src = { host: field('-s'), port: field('--sport') }
  const dst = { host: field('-d'), port: field('--dport') }
  const is = (x: { host?: string; port?: string }, y: { host: string; port: string }) => x.host === y.host && x.port === y.port
  return (is(src, a) && is(dst, b)) || (is(src, b) && is(dst, a))
}

/**
 * Removes what a criu run's lock left on the host, and says what it removed, one entry per table or rule. Nothing is
 * removed that this run cannot be shown to own: the table named by its run id, the rules naming its connections.
 */
export async function removeLeftoverLock(lock: NetworkLockRecord, logText: string | undefined): Promise<string[]> {
  const removed: string[] = []
  if (lock.method === 'skip') return removed
  if (lock.method === 'snap') {
    if (lock.table && (await deleteSnapTable(lock.table))) removed.push(`nftables table inet ${lock.table}`)
    return removed
  }
  if (lock.method === 'nftables') {
    const runId = logText ? criuRunId(logText) : undefined
    const nft = nftProgram()
    if (!runId || !nft) return removed
    const table = nftTableOf(runId)
    if (!(await nftCriuTables()).includes(table)) return removed
    const r = await queryTool(nft, ['delete', 'table', 'inet', table])
    if (r.ok) removed.push(`nftables table inet ${table}`)
    return removed
  }
  for (const rule of await iptablesCriuRules()) {
    if (!lock.connections.some((c) => ruleLocksConnection(rule.spec, c))) continue
    const args = ['-w', '-D', ...rule.spec.slice('-A '.length).split(/\s+/)]
    const r = await queryTool(rule.program, args)
    if (r.ok) removed.push(`${rule.program.split('/').at(-1)} ${rule.spec}`)
  }
  return removed
}

// snap's own lock.

const SNAP_TABLE = /^procsnap-(\d+)-(\d+)$/

/** The table of one snap run: its pid and start time (field 22 of /proc/PID/stat) name it, and its owner, for ever. */
export function snapTableName(pid: number, startTime: number): string {
  return `procsnap-${pid}-${startTime}`
}

export function snapTableOwner(table: string): { pid: number; startTime: number } | undefined {
  const m = SNAP_TABLE.exec(table)
  return m ? { pid: Number(m[1]), startTime: Number(m[2]) } : undefined
}

/** An IPv4 address in IPv6 form (::ffff:a.b.c.d) is locked as IPv4, as criu does (its packets are IPv4). */
function v4(address: string): string | undefined {
  return /^(?:::ffff:)?(\d+\.\d+\.\d+\.\d+)$/.exec(address)?.[1]
}

/**
 * The whole lock as one nft script (one transaction): criu's own rules (netfilter.c nftables_init_connection_lock),
 * packets carrying criu's mark let through, every packet of a listed connection dropped, both directions.
 */
export function snapLockScript(table: string, connections: TreeConnection[]): string {
  const four: string[] = []
  const six: string[] = []
  for (const c of connections) {
    const a = v4(c.localAddress)
    const b = v4(c.remoteAddress)
    if (a && b) four.push(`${a} . ${c.localPort} . ${b} . ${c.remotePort}`, `${b} . ${c.remotePort} . ${a} . ${c.localPort}`)
    else six.push(`${c.localAddress} . ${c.localPort} . ${c.remoteAddress} . ${c.remotePort}`, `${c.remoteAddress} . ${c.remotePort} . ${c.localAddress} . ${c.localPort}`)
  }
  const drops = [
    'ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop',
    'ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop',
  ]
  const lines = [
    `table inet ${table} {`,
    '  set conns4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; }',
    '  set conns6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; }',
    ...['input', 'output'].flatMap((hook) => [
      `  chain ${hook} {`,
      `    type filter hook ${hook} priority 0;`,
      `    meta mark ${SOCCR_MARK} accept`,
      ...drops.map((d) => `    ${d}`),
      '  }',
    ]),
    '}',
  ]
  if (four.length > 0) lines.push(`add element inet ${table} conns4 { ${four.join(', ')} }`)
  if (six.length > 0) lines.push(`add element inet ${table} conns6 { ${six.join(', ')} }`)
  return `${lines.join('\n')}\n`
}

/** Deletes a table of snap's if it is there; true when it was. */
export async function deleteSnapTable(table: string): Promise<boolean> {
  const nft = nftProgram()
  if (!nft || !SNAP_TABLE.test(table)) return false
  const r = await queryTool(nft, ['delete', 'table', 'inet', table])
  return r.ok
}

/** The procsnap-* tables on the host: snap's own locks. */
export function nftSnapTables(): Promise<string[]> {
  return nftTables(SNAP_TABLE)
}
