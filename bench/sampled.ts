// A command run to its end, its peak resident memory (VmHWM) sampled every 10 ms: how the bench measures snap's.

import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'

export async function runSampled(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; stdout: string; ms: number; peakKiB: number }> {
  const t0 = performance.now()
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'inherit'], env })
  let stdout = ''
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
  let peakKiB = 0
  const timer = setInterval(() => {
    try {
      const m = /VmHWM:\s*(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))
      if (m) peakKiB = Math.max(peakKiB, Number(m[1]))
    } catch {
      // exited
    }
  }, 10)
  const code = await new Promise<number | null>((r) => child.on('close', r))
  clearInterval(timer)
  return { code, stdout, ms: performance.now() - t0, peakKiB }
}
