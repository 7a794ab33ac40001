// The fixed costs of a small dump: `snap dump` of a 64 MiB worker that runs `criu check` (its remembered pass removed
// before the run, as every dump ran it before it was remembered) against the same dump reusing the pass, alternating
// on the same target in the same run. Reports the medians of the whole dump and of its preflight, and their ratios.

import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { median, until } from './common.ts'

export interface FixedCostsRow {
  mib: number
  rounds: number
  checked: { totalMs: number; preflightMs: number }
  remembered: { totalMs: number; preflightMs: number }
}

async function dump(snapBin: string, pid: number, out: string, journalDir: string): Promise<{ totalMs: number; preflightMs: number }> {
  const t0 = performance.now()
  const child = spawn(snapBin, ['dump', String(pid), '-o', out, '--json', '-q'], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, PROCSNAP_JOURNAL_DIR: journalDir, PROCSNAP_CACHE_DIR: join(journalDir, '..', 'cache') } })
  let stdout = ''
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
  const code = await new Promise<number | null>((r) => child.on('close', r))
  const totalMs = performance.now() - t0
  if (code !== 0) throw new Error(`snap dump failed with ${code}: ${stdout}`)
  const result = JSON.parse(stdout) as { steps: { name: string; durationMs: number }[] }
  return { totalMs, preflightMs: result.steps.find((s) => s.name === 'preflight')?.durationMs ?? NaN }
}

export async function fixedCostsBench(o: { snapBin: string; worker: string; baseDir: string; rounds: number; log: (s: string) => void }): Promise<FixedCostsRow> {
  const mib = 64
  const work = mkdtempSync(join(o.baseDir, 'snap-bench-fixed-'))
  const journalDir = join(work, 'journals')
  const progress = join(work, 'progress')
  const target = spawn(o.worker, ['--threads', '4', '--mib', String(mib), '--progress', progress, '--tick-ms', '1', '--setsid'], { stdio: 'ignore' })
  const pid = target.pid!
  try {
    await until(() => existsSync(progress) && readFileSync(progress).length > 0 && readdirSync(`/proc/${pid}/task`).length === 4, 'the 64 MiB worker')
    const checked: { totalMs: number; preflightMs: number }[] = []
    const remembered: { totalMs: number; preflightMs: number }[] = []
    const rounds = Math.max(o.rounds, 5)
    // One dump first, so that both kinds find the same warm page cache and a remembered pass to reuse.
    const out = (n: string) => join(work, `${n}.tar.zst`)
    await dump(o.snapBin, pid, out('warmup'), journalDir)
    rmSync(out('warmup'))
    for (let r = 0; r < rounds; r++) {
      for (const kind of r % 2 ? ['remembered', 'checked'] : ['checked', 'remembered']) {
        if (kind === 'checked') rmSync(join(work, 'cache', 'criu-check.json'), { force: true })
        const run = await dump(o.snapBin, pid, out(`${kind}-${r}`), journalDir)
        rmSync(out(`${kind}-${r}`))
        ;(kind === 'checked' ? checked : remembered).push(run)
        o.log(`fixed costs round ${r + 1}: ${kind === 'checked' ? '`criu check` run' : '`criu check` remembered'}, total ${Math.round(run.totalMs)} ms, preflight ${Math.round(run.preflightMs)} ms`)
      }
    }
    const m = (xs: { totalMs: number; preflightMs: number }[]) => ({ totalMs: median(xs.map((x) => x.totalMs)), preflightMs: median(xs.map((x) => x.preflightMs)) })
    return { mib, rounds, checked: m(checked), remembered: m(remembered) }
  } finally {
    target.kill('SIGKILL')
    rmSync(work, { recursive: true, force: true })
  }
}

export function fixedCostsTable(row: FixedCostsRow | undefined): string[] {
  if (!row) return []
  const f = (ms: number) => `${Math.round(ms)} ms`
  return [
    `| target | total: \`criu check\` run | total: remembered | ratio | preflight: \`criu check\` run | preflight: remembered | ratio |`,
    `| --- | --- | --- | --- | --- | --- | --- |`,
    `| ${row.mib} MiB | ${f(row.checked.totalMs)} | ${f(row.remembered.totalMs)} | ${(row.remembered.totalMs / row.checked.totalMs).toFixed(2)}x | ${f(row.checked.preflightMs)} | ${f(row.remembered.preflightMs)} | ${(row.remembered.preflightMs / row.checked.preflightMs).toFixed(2)}x |`,
    '',
    `Fixed costs: snap dump of a ${row.mib} MiB worker with its remembered \`criu check\` removed before each run, against the same dump reusing it; medians of ${row.rounds} rounds, alternating.`,
    '',
  ]
}
