// Part of stage 3: the tree's TCP connections locked while criu dumps them (see src/tools/network-lock.ts for why snap takes
// this lock itself): once every process is stopped nothing can accept or close a connection, so the list read then is
// the one criu will dump. One nft transaction sets the lock, one removes it when criu is done; both nft processes are
// started before the freeze and wait for their script, so the freeze pays for no fork of snap.

import { join } from 'node:path'
import { StepFailedError } from '../../errors.js'
import { readTreeConnections } from '../../process/sockets.js'
import { deleteSnapTable, nftProgram, snapLockScript } from '../../tools/network-lock.js'
import { startTool, tailLines, isToolLine, type StartedTool } from '../../tools/run.js'
import { exitText, type DumpState } from './state.js'

/** Started before the freeze: one nft to set the lock, one to remove it, each waiting for its script on stdin. */
export function readyNetworkLock(s: DumpState): void {
  if (s.networkLock?.method !== 'snap') return
  const nft = nftProgram()!
  const start = (name: string): StartedTool =>
    startTool(nft, ['-f', '-'], { stdin: 'pipe', logFile: join(s.workDir!, 'logs', `${name}.log`), onSpawn: (pid) => s.trackTool(pid, true) })
  s.lockTools = { lock: start('nft-lock'), unlock: start('nft-unlock') }
}

async function runScript(s: DumpState, tool: StartedTool, script: string, what: string): Promise<void> {
  tool.write(script)
  tool.endInput()
  tool.armTimeout(s.budget.remainingMs(30_000))
  const run = await tool.done
  if (run.pid !== undefined) s.trackTool(run.pid, false)
  if (run.exitCode !== 0)
    throw new StepFailedError(`${what} failed (${exitText(run)}): ${tailLines(run.logFile, 2, isToolLine).join(' | ') || 'nft gave no error line'}`)
}

/** Locks every TCP connection of the stopped tree, before criu's gate opens; returns what it did, for the record. */
export async function lockConnections(s: DumpState): Promise<string | undefined> {
  const lock = s.networkLock
  if (lock?.method !== 'snap' || !s.lockTools) return undefined
  s.budget.checkCancelled('locking the connections')
  const connections = readTreeConnections(s.members.map((m) => m.id.pid))
  if (connections.length === 0) {
    // Nothing to lock (a listener only): no table, and the waiting nft processes are let go.
    await releaseLockTools(s)
    return 'no TCP connection to lock'
  }
  // Set before the lock is: a snap that dies between the two leaves a table the rollback and recover still look for.
  s.lockSet = true
  await runScript(s, s.lockTools.lock, snapLockScript(lock.table!, connections), `locking ${connections.length} TCP connection(s) with nft`)
  return `${connections.length} TCP connection(s) locked in one nftables transaction (table inet ${lock.table})`
}

/** An nft given an empty script exits at once: how the processes that were not needed end. */
async function releaseLockTools(s: DumpState): Promise<void> {
  const tools = s.lockTools
  s.lockTools = undefined
  if (!tools) return
  for (const t of [tools.lock, tools.unlock]) t.endInput()
  for (const t of [tools.lock, tools.unlock]) {
    const run = await t.done
    if (run.pid !== undefined) s.trackTool(run.pid, false)
  }
}

/** Once criu is done with the connections; the rollback removes the lock itself when criu was not. */
export async function unlockConnections(s: DumpState): Promise<void> {
  if (!s.lockSet || !s.networkLock?.table || !s.lockTools) return releaseLockTools(s)
  try {
    await runScript(s, s.lockTools.unlock, `delete table inet ${s.networkLock.table}\n`, 'unlocking the connections')
  } catch (e) {
    // The prepared nft could not do it: once more the plain way, and the rollback would try again.
    if (!(await deleteSnapTable(s.networkLock.table))) throw e
  }
  s.lockSet = false
  s.lockTools = undefined
}

/** criu ended the tree with its connections in repair mode (DumpState.criuKills): the lock stays until the restore
 *  lifts it, so their peers wait instead of being reset. Returns what it kept, for the record. */
export async function keepLockForRestore(s: DumpState): Promise<string | undefined> {
  await releaseLockTools(s)
  if (!s.lockSet || !s.networkLock?.table) return undefined
  return `the lock on ${s.networkLock.connections.length} TCP connection(s) kept until the restore (table inet ${s.networkLock.table})`
}
