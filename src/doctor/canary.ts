// The doctor's proof that this host can capture a real service: a small canary holding a listening TCP socket and an
// established loopback connection it pings itself over is dumped, must keep pinging, is killed, restored, and must
// answer on its listening socket again. A host where that works can capture a service; `criu check` alone cannot say.

import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DumpRun } from '../pipelines/dump.js'
import { RestoreRun } from '../pipelines/restore/index.js'
import { checkIdentity, captureIdentity, type TargetIdentity } from '../process/identity.js'
import { pollUntil } from '../process/poll.js'
import { readStat } from '../process/proc.js'
import { silentProgress } from '../pipelines/progress.js'
import { SnapError } from '../errors.js'
import { generateKeyPair } from '../bundle/signature.js'

export interface CanaryStep {
  what: string
  ok: boolean
  detail: string
}

export interface CanaryReport {
  ok: boolean
  skipped?: string
  steps: CanaryStep[]
}

const PYTHON = ['/usr/bin/python3', '/bin/python3'].find((p) => existsSync(p))

/** Listens, connects to itself, then pings over that connection every 20 ms; a broken connection ends it (exit 3). It
 *  answers "pong" to anyone who connects to its listening socket. Its port goes to a file it closes at once. */
const CANARY = String.raw`
import os, select, socket, sys, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(('127.0.0.1', 0)); l.listen(8)
c = socket.create_connection(l.getsockname()); s, _ = l.accept()
with open(sys.argv[1] + '.tmp', 'w') as f: f.write(str(l.getsockname()[1]))
os.rename(sys.argv[1] + '.tmp', sys.argv[1])
while True:
    r, _, _ = select.select([l], [], [], 0.02)
    if r:
        a, _ = l.accept(); a.sendall(b'pong'); a.close()
    try:
        c.sendall(b'x')
        if s.recv(1) != b'x': sys.exit(3)
    except OSError:
        sys.exit(3)
`

function ask(port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port })
    let got = ''
    const timer = setTimeout(() => {
      sock.destroy()
      reject(new Error(`no answer on port ${port} in ${timeoutMs} ms`))
    }, timeoutMs)
    sock.on('data', (d) => (got += d.toString()))
    sock.on('close', () => {
      clearTimeout(timer)
      resolve(got)
    })
    sock.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
  })
}

const alive = (id: TargetIdentity) => checkIdentity(id) === 'same'

/** SIGKILL, then wait until that process is gone (a zombie counts as gone: the restored canary is snap's child,
 *  reaped only when snap exits). */
async function killAndWait(id: TargetIdentity): Promise<void> {
  if (alive(id)) process.kill(id.pid, 'SIGKILL')
  await pollUntil(() => !alive(id), { timeoutMs: 10_000 })
}

/** Runs the canary through a dump and a restore; every step is reported, and nothing of it is left running. */
export async function runCanary(o: { criu?: string; gdb?: string; toolVersion: string; cancel: AbortSignal }): Promise<CanaryReport> {
  if (!PYTHON) return { ok: false, skipped: 'python3 not found: the canary is a python3 program', steps: [] }
  const steps: CanaryStep[] = []
  const dir = mkdtempSync(join(tmpdir(), 'snap-canary-'))
  const portFile = join(dir, 'port')
  const child = spawn(PYTHON, ['-c', CANARY, portFile], { detached: true, stdio: 'ignore', cwd: dir })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let canary: TargetIdentity | undefined
  let restored: TargetIdentity | undefined
  const step = (what: string, ok: boolean, detail: string) => steps.push({ what, ok, detail })
  try {
    const ready = await pollUntil(() => existsSync(portFile), { timeoutMs: 10_000 })
    if (!ready || child.pid === undefined) {
      step('start the canary', false, 'it did not start listening within 10 s')
      return { ok: false, steps }
    }
    canary = captureIdentity(child.pid)
    const port = Number(readFileSync(portFile, 'utf8'))
    step('start the canary', true, `pid ${canary.pid}, listening on 127.0.0.1:${port}, one established connection`)

    const bundle = join(dir, 'canary.snap.tar.zst')
    // Signed with a key made for this run, and restored trusting only that key: the path a real restore takes.
    const { privatePath, publicPath } = generateKeyPair(join(dir, 'canary.key'))
    try {
      const r = await new DumpRun(
        { pid: canary.pid, output: bundle, compression: 'zstd', criu: o.criu, gdb: o.gdb, includeEnv: false, criuExtraOptions: [], cores: 'root', signKeyPath: privatePath, cancel: o.cancel, toolVersion: o.toolVersion, timeoutSec: 120 },
        silentProgress,
      ).execute()
      step('dump it', true, `criu options ${r.criuOptions.map((c) => c.option).join(' ') || '(none)'}; freeze ${Math.round(r.freezeWindowMs)} ms`)
    } catch (e) {
      step('dump it', false, e instanceof SnapError ? e.oneLine() : String(e))
      return { ok: false, steps }
    }
    // Still pinging over its own connection (it exits on the first failure), and answering on its listening socket.
    const pinging = await pollUntil(() => !alive(canary!), { timeoutMs: 500 })
    let answer = ''
    try {
      answer = await ask(port, 5000)
    } catch (e) {
      answer = (e as Error).message
    }
    const connectionsOk = !pinging && answer === 'pong'
    step('its connections work after the dump', connectionsOk, connectionsOk ? 'the established connection and the listening socket both answer' : alive(canary) ? `the listening socket said: ${answer}` : 'the canary exited: its connection broke')
    if (!connectionsOk) return { ok: false, steps }

    await killAndWait(canary)
    // The restore needs its pid free: the canary is our own child, reaped once it has exited.
    await exited
    await pollUntil(() => !readStat(canary!.pid), { timeoutMs: 10_000 })
    try {
      const r = await new RestoreRun({ bundle, newPidns: false, criu: o.criu, publicKey: publicPath, cancel: o.cancel, timeoutSec: 120 }, silentProgress).execute()
      restored = captureIdentity(r.pid)
      step('restore it after a kill', true, `pid ${r.pid}, signature checked against the run's own key`)
    } catch (e) {
      step('restore it after a kill', false, e instanceof SnapError ? e.oneLine() : String(e))
      return { ok: false, steps }
    }
    let again = ''
    try {
      again = await ask(port, 5000)
    } catch (e) {
      again = (e as Error).message
    }
    step('the restored canary answers', again === 'pong', again === 'pong' ? `on 127.0.0.1:${port}` : again)
    return { ok: steps.every((s) => s.ok), steps }
  } finally {
    if (canary) await killAndWait(canary).catch(() => undefined)
    else if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    if (restored) await killAndWait(restored).catch(() => undefined)
    rmSync(dir, { recursive: true, force: true })
  }
}
