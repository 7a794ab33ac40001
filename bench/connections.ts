// The freeze of a server holding N established loopback connections (a python selector loop; the other ends held by a
// second python process outside the tree): snap's, against a bare `kill -STOP; criu dump; kill -CONT` of the same
// server with each of criu's network locks, in the same run. criu's iptables lock runs iptables twice per connection,
// so it is measured up to IPTABLES_MAX connections only; criu's nftables lock aborts past about 250 connections here
// (a run that fails is reported as such, not timed).

import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { median } from './common.ts'

// The echo server the network-lock tests use.
const ECHO_SERVER = new URL('../test/fixtures/echo_server.py', import.meta.url).pathname

const CLIENTS = `
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
cs = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
for c in cs: c.sendall(b"x\\n")
for c in cs: c.recv(16)
open(sys.argv[3], "w").write("ready")
time.sleep(1e6)
`

const IPTABLES_MAX = 100

export interface ConnectionsRow {
  connections: number
  snapFreezeMs: number
  bare: Record<'skip' | 'nftables' | 'iptables', number | 'failed' | 'not run'>
}

async function waitForFile(path: string, what: string): Promise<string> {
  const end = performance.now() + 60_000
  while (!existsSync(path) || readFileSync(path, 'utf8') === '') {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
  return readFileSync(path, 'utf8')
}

function bareFreezeMs(criu: string, pid: number, work: string, lock: string): number | 'failed' {
  const d = mkdtempSync(join(work, 'bare-'))
  const script =
    `a=$(date +%s%N); kill -STOP ${pid} && ${criu} dump -t ${pid} -D ${d} --leave-running --tcp-established --skip-in-flight ` +
    `--network-lock ${lock} -o dump.log >/dev/null 2>&1; s=$?; kill -CONT ${pid}; b=$(date +%s%N); echo $(( (b - a) / 1000 )); exit $s`
  const r = spawnSync('bash', ['-c', script], { encoding: 'utf8' })
  rmSync(d, { recursive: true, force: true })
  // A criu that died may leave its table behind: remove every CRIU-* table so the next run starts clean.
  spawnSync('bash', ['-c', "nft list tables inet 2>/dev/null | awk '/CRIU-/ {print $3}' | xargs -r -n1 nft delete table inet"])
  return r.status === 0 ? Number(r.stdout.trim()) / 1000 : 'failed'
}

export async function connectionsBench(o: { snapBin: string; criu: string; baseDir: string; rounds: number; counts: number[]; log: (s: string) => void }): Promise<ConnectionsRow[]> {
  const rows: ConnectionsRow[] = []
  for (const n of o.counts) {
    const work = mkdtempSync(join(o.baseDir, 'snap-bench-conns-'))
    const portFile = join(work, 'port')
    const server = spawn('/usr/bin/python3', [ECHO_SERVER, portFile], { stdio: 'ignore', detached: true })
    const port = Number(await waitForFile(portFile, 'the echo server'))
    const ready = join(work, 'clients')
    const clients = spawn('/usr/bin/python3', ['-c', CLIENTS, String(port), String(n), ready], { stdio: 'ignore', detached: true })
    try {
      await waitForFile(ready, `${n} connections`)
      const snap: number[] = []
      const bare: Record<'skip' | 'nftables' | 'iptables', (number | 'failed')[]> = { skip: [], nftables: [], iptables: [] }
      for (let r = 0; r < o.rounds; r++) {
        const bundle = join(work, `b-${r}.tar.zst`)
        const res = spawnSync(o.snapBin, ['dump', String(server.pid), '-o', bundle, '--json', '-q', '--cores', 'root'], { encoding: 'utf8' })
        if (res.status !== 0) throw new Error(`snap dump of the ${n}-connection server failed with ${res.status}: ${res.stderr}`)
        snap.push((JSON.parse(res.stdout) as { freezeWindowMs: number }).freezeWindowMs)
        rmSync(bundle, { force: true })
        for (const lock of ['skip', 'nftables', 'iptables'] as const) {
          if (lock === 'iptables' && n > IPTABLES_MAX) continue
          bare[lock].push(bareFreezeMs(o.criu, server.pid!, work, lock))
        }
        o.log(`${n} connections round ${r + 1}: snap freeze ${Math.round(snap.at(-1)!)} ms; bare criu ${Object.entries(bare).map(([k, v]) => `${k} ${v.at(-1) ?? '-'}`).join(', ')}`)
      }
      const cell = (xs: (number | 'failed')[]): number | 'failed' | 'not run' => {
        if (xs.length === 0) return 'not run'
        const ok = xs.filter((x): x is number => x !== 'failed')
        return ok.length === xs.length ? median(ok) : 'failed'
      }
      rows.push({ connections: n, snapFreezeMs: median(snap), bare: { skip: cell(bare.skip), nftables: cell(bare.nftables), iptables: cell(bare.iptables) } })
    } finally {
      for (const p of [clients.pid, server.pid]) if (p) process.kill(p, 'SIGKILL')
      rmSync(work, { recursive: true, force: true })
    }
  }
  return rows
}

export function connectionsTable(rows: ConnectionsRow[]): string[] {
  if (rows.length === 0) return []
  const none = rows.find((r) => r.connections === 0)?.snapFreezeMs
  const f = (x: number | 'failed' | 'not run') => (typeof x === 'number' ? `${Math.round(x)} ms` : x)
  return [
    '| connections | freeze: snap | snap to none | bare criu, no lock | snap to it | bare criu, nftables lock | bare criu, iptables lock |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map(
      (r) =>
        `| ${r.connections} | ${f(r.snapFreezeMs)} | ${none ? `${(r.snapFreezeMs / none).toFixed(2)}x` : '-'} | ${f(r.bare.skip)} | ${typeof r.bare.skip === 'number' ? `${(r.snapFreezeMs / r.bare.skip).toFixed(2)}x` : '-'} | ${f(r.bare.nftables)} | ${f(r.bare.iptables)} |`,
    ),
    '',
    `Connections: snap's freeze is the manifest's (first SIGSTOP to the tree back); bare criu's is \`kill -STOP\` to \`kill -CONT\` in one shell; medians. criu's iptables lock is run up to ${IPTABLES_MAX} connections; "failed": criu exited non-zero.`,
    '',
  ]
}
