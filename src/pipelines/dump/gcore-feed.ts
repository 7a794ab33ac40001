// gdb's gcore commands given one process at a time. Each process's commands (attach, gcore, detach) end with a marker
// gdb writes once it has detached (`dump binary value FILE 1`: a file, no shell started), and the next process's come
// only after it: snap always knows whether gdb has a process, is about to take one, or waits between two. Stopping
// gdb (a signal to snap, the deadline) waits for the marker and then asks gdb to quit, so no signal ever reaches a
// gdb that was given an attach. Waiting only while the tree was traced (let-go.ts) left a window: the commands
// written, gdb not attached yet. Ctrl+C 26 ms into the gcore step of a 64 MiB worker fell in it, gdb got SIGTERM as
// it attached, and the worker died.

import { existsSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { pollUntil } from '../../process/poll.js'
import { readStat } from '../../process/proc.js'
import { gcoreCommandsFor } from '../../tools/gdb.js'
import type { StartedTool } from '../../tools/run.js'

/**
 * A gdb given a process that has not traced any of it after this long is not taking it (a gdb stuck before its
 * attach): a stop then goes ahead. gdb attaches within milliseconds here.
 */
const NOT_TAKEN_MS = 2000

export class GcoreFeed {
  private given: { pid: number; marker: string; at: number } | undefined
  private finished = false
  /** Set once a stop began: no process is given to gdb after that. */
  stopping = false

  constructor(
    private readonly session: StartedTool,
    private readonly markerDir: string,
  ) {}

  /** gdb has exited (or is a zombie: it let go of everything then). From /proc: the session's own end waits for a stop. */
  private get exited(): boolean {
    const pid = this.session.pid
    if (pid === undefined) return true
    const st = readStat(pid)
    return st === undefined || st.state === 'Z' || st.state === 'X'
  }

  /** Gives gdb one process and waits until it has detached from it (its marker), or has exited. False: not given. */
  async core(pid: number, file: string): Promise<boolean> {
    if (this.stopping || this.exited) return false
    const marker = join(this.markerDir, `.gcore-done.${pid}`)
    rmSync(marker, { force: true })
    this.given = { pid, marker, at: performance.now() }
    this.session.write(gcoreCommandsFor(pid, file, marker))
    // No deadline of its own: the session's stops gdb, and then it exits.
    await pollUntil(() => this.exited || existsSync(marker), { timeoutMs: Number.POSITIVE_INFINITY, maxIntervalMs: 5 })
    rmSync(marker, { force: true })
    this.given = undefined
    return true
  }

  /** Ends gdb's input after its last process: it quits. */
  finish(): void {
    if (this.finished) return
    this.finished = true
    this.session.write('quit\n')
    this.session.endInput()
  }

  /**
   * The session's beforeStop: waits, at most `timeoutMs`, for gdb to be done with the process it was given (or to
   * show that it is not taking it: `traces()` false NOT_TAKEN_MS after), then asks it to quit and gives it a second to.
   * What is still running after that is stopped by signals, as any tool.
   */
  async letGo(timeoutMs: number, traces: () => boolean, note: (line: string) => void): Promise<void> {
    this.stopping = true
    const given = this.given
    if (given && !this.exited) {
      const done = () => this.exited || existsSync(given.marker)
      if (!done())
        note(`waiting for gdb to be done with process ${given.pid}, which it was given (at most ${Math.round(timeoutMs / 1000)} s): signalled as it attaches, gdb can take a process down`)
      await pollUntil(() => done() || (performance.now() - given.at > NOT_TAKEN_MS && !traces()), { timeoutMs, maxIntervalMs: 5 })
      if (!done()) return
    }
    if (this.exited) return
    this.finish()
    await pollUntil(() => this.exited, { timeoutMs: 1000, maxIntervalMs: 5 })
  }
}
