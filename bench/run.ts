// `npm run bench`: snap dump against the hand-run runbook it replaces (kill -STOP; gcore; criu dump; kill -CONT;
// tar | zstd), on the same targets, alternating, several rounds; and snap restore against a bare criu restore of
// the same images; then, for a 600-thread target and one with large sparse mappings, snap's freeze against snap
// --core gcore; a small dump with `criu check` run against remembered; --core-only (native) against --core gcore
// and bare criu. Reports medians and ratios to baselines measured in the same run. Needs root, like snap.
//
//   BENCH_SIZES=64,512,2048 (MiB of non-zero memory)  BENCH_ROUNDS=3  BENCH_DIR=/var/tmp  BENCH_SHAPES=0 (skip
//   the shapes)  BENCH_CONNECTIONS=none  BENCH_FIXED=0 (skip the fixed costs)  BENCH_CORE_ONLY=0  BENCH_TREE=0 (skip
//   the 101-process tree)  BENCH_TREE_WORKERS=100  BENCH_TREE_OLD=0 (skip its one-gdb-per-process run)
//   BENCH_WATCH=none (or the tree sizes the watcher's CPU is measured on, 1,100 by default)  BENCH_WATCH_SECONDS=60
//   BENCH_SHIP=0 (skip a 1 GiB dump plain against --encrypt-to and its --upload to s3rver)  BENCH_SHIP_MIB=1024  npm run bench

import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connectionsBench, connectionsTable } from './connections.ts'
import { coreOnlyBench, coreOnlyTable } from './core-only.ts'
import { fixedCostsBench, fixedCostsTable } from './fixed-costs.ts'
import { watchCpuBench, watchCpuTable } from './watch.ts'
import { treeStacksBench, treeStacksTable } from './tree-stacks.ts'
import { shipBench, shipTable } from './encrypt.ts'
import { runSampled } from './sampled.ts'
import { median, until } from './common.ts'

const root = new URL('..', import.meta.url).pathname
const snapBin = join(root, 'bin/snap')
const worker = join(root, 'test/fixtures/bin/worker')
// BENCH_SIZES=none runs only the shapes (600 threads, sparse mappings).
const sizes = process.env.BENCH_SIZES === 'none' ? [] : (process.env.BENCH_SIZES ?? '64,512,2048').split(',').map(Number)
const rounds = Number(process.env.BENCH_ROUNDS ?? 3)
const baseDir = process.env.BENCH_DIR ?? '/var/tmp'
const outDir = join(root, 'bench-results')
const criu = process.env.PROCSNAP_CRIU ?? '/usr/local/sbin/criu'

const log = (s: string) => process.stderr.write(`bench: ${s}\n`)

function readProgress(path: string): { ticks: number; maxGapUs: number; resets: number } {
  const t = readFileSync(path, 'utf8')
  const num = (k: string) => Number(new RegExp(`${k}=(\\d+)`).exec(t)?.[1] ?? NaN)
  return { ticks: num('ticks'), maxGapUs: num('maxgap_us'), resets: num('resets') }
}

interface Target {
  pid: number
  progress: string
  dir: string
}

async function startTarget(mib: number): Promise<Target> {
  const dir = mkdtempSync(join(baseDir, 'snap-bench-'))
  const progress = join(dir, 'progress')
  const child = spawn(worker, ['--threads', '4', '--mib', String(mib), '--progress', progress, '--tick-ms', '1', '--setsid'], { stdio: 'ignore', detached: false })
  child.unref()
  const pid = child.pid!
  await until(() => existsSync(progress) && readProgress(progress).ticks > 0 && readdirSync(`/proc/${pid}/task`).length === 4, 'the target to be ready', 60_000 + mib * 20, 5)
  return { pid, progress, dir }
}

/** Resets the target's longest gap; the next reading is the longest pause it saw from now on. */
/** Before each measured run: the writeback of the last run's gigabytes (bundles, images, cores) must not fall into
 *  this one's time. Measured here without it: a bare criu dump of the 600-thread target took 4.7 s after the 2 GiB
 *  rounds and 0.6 s on a quiet disk (criu creates one file per thread). */
function settleDisk(): void {
  spawnSync('sync', [], { stdio: 'ignore' })
}

async function resetGap(t: Target): Promise<void> {
  settleDisk()
  const before = readProgress(t.progress).resets
  process.kill(t.pid, 'SIGUSR1')
  await until(() => readProgress(t.progress).resets > before, 'the gap reset', 5000, 5)
  const ticks = readProgress(t.progress).ticks
  await until(() => readProgress(t.progress).ticks > ticks + 5, 'ticks after the reset', 5000, 5)
}

async function settledGapMs(t: Target): Promise<number> {
  // After the run the target must tick a few more times so the gap that ended with the release is recorded.
  const ticks = readProgress(t.progress).ticks
  await until(() => readProgress(t.progress).ticks > ticks + 5, 'ticks after the run', 5000, 5)
  return readProgress(t.progress).maxGapUs / 1000
}

interface Run {
  freezeMs: number
  totalMs: number
  bundleBytes: number
  peakKiB?: number
  snapFreezeMs?: number
}

async function runbook(t: Target, work: string): Promise<Run> {
  const d = mkdtempSync(join(work, 'runbook-'))
  mkdirSync(join(d, 'img'))
  // The runbook as an engineer types it: no polling, no checks.
  const script = [
    `kill -STOP ${t.pid}`,
    `gcore -o ${d}/img/core ${t.pid} >/dev/null 2>&1`,
    `${criu} dump -t ${t.pid} -D ${d}/img --leave-stopped -o dump.log >/dev/null 2>&1`,
    `kill -CONT ${t.pid}`,
    `tar -C ${d}/img -cf - . | zstd -T0 -3 -q -o ${d}/bundle.tar.zst`,
  ].join(' && ')
  await resetGap(t)
  const t0 = performance.now()
  const r = spawnSync('bash', ['-c', script], { stdio: 'inherit' })
  const totalMs = performance.now() - t0
  if (r.status !== 0) throw new Error(`runbook failed with ${r.status}`)
  const freezeMs = await settledGapMs(t)
  const bundleBytes = statSync(join(d, 'bundle.tar.zst')).size
  rmSync(d, { recursive: true, force: true })
  return { freezeMs, totalMs, bundleBytes }
}

/** The limit on this kernel: only what the freeze cannot do without, stop, criu dump, continue. */
async function bareCriu(t: Target, work: string): Promise<Run> {
  const d = mkdtempSync(join(work, 'bare-criu-'))
  const script = [`kill -STOP ${t.pid}`, `${criu} dump -t ${t.pid} -D ${d} --leave-stopped -o dump.log >/dev/null 2>&1`, `kill -CONT ${t.pid}`].join(' && ')
  await resetGap(t)
  const t0 = performance.now()
  const r = spawnSync('bash', ['-c', script], { stdio: 'inherit' })
  const totalMs = performance.now() - t0
  if (r.status !== 0) throw new Error(`bare criu dump failed with ${r.status}`)
  const freezeMs = await settledGapMs(t)
  rmSync(d, { recursive: true, force: true })
  return { freezeMs, totalMs, bundleBytes: 0 }
}

async function snapDump(t: Target, work: string, extra: string[] = []): Promise<Run & { bundle: string }> {
  const out = join(work, `snap-${Date.now()}.tar.zst`)
  await resetGap(t)
  const r = await runSampled(snapBin, ['dump', String(t.pid), '-o', out, '--json', '-q', ...extra])
  if (r.code !== 0) throw new Error(`snap dump failed with ${r.code}: ${r.stdout}`)
  const freezeMs = await settledGapMs(t)
  const result = JSON.parse(r.stdout) as { freezeWindowMs: number; bundleSize: number }
  return { freezeMs, totalMs: r.ms, bundleBytes: result.bundleSize, peakKiB: r.peakKiB, snapFreezeMs: result.freezeWindowMs, bundle: out }
}

async function killAndWaitFree(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    // gone
  }
  await until(() => !existsSync(`/proc/${pid}`), `pid ${pid} to be free`, 10_000, 5)
}

async function restoreComparison(bundle: string, pid: number, work: string): Promise<{ snapMs: number; snapAfterExtractMs: number; criuMs: number }> {
  const images = mkdtempSync(join(work, 'images-'))
  execFileSync('bash', ['-c', `zstd -dc ${bundle} | tar -C ${images} -xf - --wildcards 'criu/*'`])
  const snapMs: number[] = []
  const afterExtract: number[] = []
  const criuMs: number[] = []
  for (let r = 0; r < rounds; r++) {
    for (const which of r % 2 ? ['criu', 'snap'] : ['snap', 'criu']) {
      if (which === 'snap') {
        const res = await runSampled(snapBin, ['restore', bundle, '--json', '-q', '--leave-stopped', '--allow-unsigned'])
        if (res.code !== 0) throw new Error(`snap restore failed: ${res.stdout}`)
        const d = (JSON.parse(res.stdout) as { durations: Record<string, number> }).durations
        snapMs.push(res.ms)
        afterExtract.push((d['criu-restore'] ?? 0) + (d['check'] ?? 0) + (d['final-state'] ?? 0))
      } else {
        const pidfile = join(images, 'pid')
        rmSync(pidfile, { force: true })
        const t0 = performance.now()
        const res = spawnSync(criu, ['restore', '-D', join(images, 'criu'), '--restore-detached', '--pidfile', pidfile, '-o', join(images, 'restore.log')], { stdio: 'ignore' })
        criuMs.push(performance.now() - t0)
        if (res.status !== 0) throw new Error('bare criu restore failed')
      }
      await killAndWaitFree(pid)
    }
  }
  rmSync(images, { recursive: true, force: true })
  return { snapMs: median(snapMs), snapAfterExtractMs: median(afterExtract), criuMs: median(criuMs) }
}

/** Targets whose freeze under gcore grows with what they map or how many threads they have, not with their data:
 *  600 idle threads, and two 1 GiB shared mappings with one page touched in each. python3, a session of its own. */
const SHAPES: Record<string, string> = {
  '600 threads': [
    'import sys, threading, time',
    'for _ in range(600): threading.Thread(target=lambda: time.sleep(1e6), daemon=True).start()',
    'open(sys.argv[1], "w").write("ready")',
    'time.sleep(1e6)',
  ].join('\n'),
  'sparse 2 GiB shared': [
    'import mmap, sys, time',
    'maps = [mmap.mmap(-1, 1 << 30, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS) for _ in range(2)]',
    'for m in maps: m[0:5] = b"touch"',
    'open(sys.argv[1], "w").write("ready")',
    'time.sleep(1e6)',
  ].join('\n'),
}

/** snap's own freeze window (the manifest's), default against --core gcore, for each shape, alternating. */
/** A bare `kill -STOP; criu dump; kill -CONT` of a target without ticks: the freeze is the time from the STOP to the
 *  CONT, taken inside the same shell. */
function bareCriuFreezeMs(pid: number, work: string): number {
  settleDisk()
  const d = mkdtempSync(join(work, 'bare-criu-'))
  const script = `a=$(date +%s%N); kill -STOP ${pid} && ${criu} dump -t ${pid} -D ${d} --leave-stopped -o dump.log >/dev/null 2>&1 && kill -CONT ${pid}; s=$?; b=$(date +%s%N); echo $(( (b - a) / 1000 )); exit $s`
  const r = spawnSync('bash', ['-c', script], { encoding: 'utf8' })
  rmSync(d, { recursive: true, force: true })
  if (r.status !== 0) throw new Error(`bare criu dump failed with ${r.status}`)
  return Number(r.stdout.trim()) / 1000
}

/** Starts a fresh shape target and waits until it is ready. */
async function startShape(shape: string, script: string, work: string): Promise<ReturnType<typeof spawn>> {
  const ready = join(work, `ready-${Math.random().toString(16).slice(2)}`)
  const child = spawn('/usr/bin/python3', ['-c', script, ready], { stdio: 'ignore', detached: true })
  await until(() => existsSync(ready), `the ${shape} target to be ready`, 60_000, 5)
  return child
}

/**
 * Each run on a target of its own: after gdb has attached to and detached from every thread of the 600-thread
 * target, a bare criu dump of that same process took 5.8-6.1 s instead of 0.4 s (measured here), so runs on one
 * target would measure the one before.
 */
async function shapes(): Promise<{ shape: string; snapFreezeMs: number; gcoreFreezeMs: number; bareCriuFreezeMs: number; snapBundle: number; gcoreBundle: number }[]> {
  const out = []
  for (const [shape, script] of Object.entries(SHAPES)) {
    const work = mkdtempSync(join(baseDir, 'snap-bench-shape-'))
    const runs: Record<'snap' | 'gcore', { freeze: number; bundle: number }[]> = { snap: [], gcore: [] }
    const bare: number[] = []
    for (let r = 0; r < rounds; r++) {
      for (const which of r % 2 ? (['gcore', 'snap', 'bare'] as const) : (['bare', 'snap', 'gcore'] as const)) {
        const child = await startShape(shape, script, work)
        try {
          if (which === 'bare') {
            bare.push(bareCriuFreezeMs(child.pid!, work))
            log(`${shape} round ${r + 1}: bare criu freeze ${Math.round(bare.at(-1)!)} ms`)
            continue
          }
          const bundle = join(work, `b-${which}-${r}.tar.zst`)
          settleDisk()
          const res = await runSampled(snapBin, ['dump', String(child.pid), '-o', bundle, '--json', '-q', ...(which === 'gcore' ? ['--core', 'gcore'] : [])])
          if (res.code !== 0) throw new Error(`snap dump of the ${shape} target failed with ${res.code}`)
          const result = JSON.parse(res.stdout) as { freezeWindowMs: number; bundleSize: number }
          runs[which].push({ freeze: result.freezeWindowMs, bundle: result.bundleSize })
          rmSync(bundle, { force: true })
          log(`${shape} round ${r + 1}: ${which} freeze ${Math.round(result.freezeWindowMs)} ms`)
        } finally {
          process.kill(child.pid!, 'SIGKILL')
        }
      }
    }
    rmSync(work, { recursive: true, force: true })
    out.push({
      shape,
      snapFreezeMs: median(runs.snap.map((x) => x.freeze)),
      gcoreFreezeMs: median(runs.gcore.map((x) => x.freeze)),
      bareCriuFreezeMs: median(bare),
      snapBundle: median(runs.snap.map((x) => x.bundle)),
      gcoreBundle: median(runs.gcore.map((x) => x.bundle)),
    })
  }
  return out
}

function startupTimes(): { versionMs: number; helpMs: number; nodeMs: number } {
  const time = (file: string, args: string[]) => {
    const xs: number[] = []
    for (let i = 0; i < 7; i++) {
      const t0 = performance.now()
      spawnSync(file, args, { stdio: 'ignore' })
      xs.push(performance.now() - t0)
    }
    return median(xs)
  }
  return { versionMs: time(snapBin, ['--version']), helpMs: time(snapBin, ['--help']), nodeMs: time(join(root, 'node_modules/.bin/node'), ['-e', '0']) }
}

function chart(rows: { mib: number; runbook: number; snap: number; short: number }[]): string {
  const W = 560, H = 320, L = 60, B = 40, T = 20, R = 20
  const maxY = Math.max(...rows.flatMap((r) => [r.runbook, r.snap, r.short])) * 1.15
  const x = (i: number) => L + ((i + 0.5) * (W - L - R)) / rows.length
  const y = (v: number) => H - B - (v / maxY) * (H - B - T)
  const bw = (W - L - R) / rows.length / 4
  const bars = rows
    .map((r, i) =>
      [
        `<rect x="${x(i) - 1.5 * bw}" y="${y(r.runbook)}" width="${bw}" height="${H - B - y(r.runbook)}" fill="#999"/>`,
        `<rect x="${x(i) - 0.5 * bw}" y="${y(r.snap)}" width="${bw}" height="${H - B - y(r.snap)}" fill="#2a6"/>`,
        `<rect x="${x(i) + 0.5 * bw}" y="${y(r.short)}" width="${bw}" height="${H - B - y(r.short)}" fill="#36c"/>`,
        `<text x="${x(i) + bw}" y="${y(r.short) - 4}" text-anchor="middle" font-size="10">${Math.round(r.short)}</text>`,
        `<text x="${x(i)}" y="${H - B + 16}" text-anchor="middle" font-size="12">${r.mib} MiB</text>`,
        `<text x="${x(i) - bw}" y="${y(r.runbook) - 4}" text-anchor="middle" font-size="10">${Math.round(r.runbook)}</text>`,
        `<text x="${x(i)}" y="${y(r.snap) - 4}" text-anchor="middle" font-size="10">${Math.round(r.snap)}</text>`,
      ].join(''),
    )
    .join('\n')
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${L}" y="14" font-size="13">Freeze seen by the target (ms, median): runbook (grey), snap dump --core gcore (green), snap dump (blue)</text>
<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>
<text x="14" y="${(H - B) / 2}" font-size="11" transform="rotate(-90 14 ${(H - B) / 2})">ms</text>
${bars}
</svg>
`
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the bench needs root (criu and gdb)')
  mkdirSync(outDir, { recursive: true })
  const rows: Record<string, unknown>[] = []
  const chartRows: { mib: number; runbook: number; snap: number; short: number }[] = []
  for (const mib of sizes) {
    log(`${mib} MiB target: starting`)
    const work = mkdtempSync(join(baseDir, 'snap-bench-work-'))
    const t = await startTarget(mib)
    const rb: Run[] = []
    const sn: (Run & { bundle: string })[] = []
    const gc: Run[] = []
    const bare: Run[] = []
    const order = ['bare-criu', 'runbook', 'snap', 'gcore']
    for (let r = 0; r < rounds; r++) {
      for (const which of r % 2 ? [...order].reverse() : order) {
        if (which === 'runbook') rb.push(await runbook(t, work))
        else if (which === 'bare-criu') bare.push(await bareCriu(t, work))
        else if (which === 'gcore') {
          const s = await snapDump(t, work, ['--core', 'gcore'])
          rmSync(s.bundle, { force: true })
          gc.push(s)
        } else {
          const s = await snapDump(t, work)
          if (sn.length > 0) rmSync(sn[sn.length - 1]!.bundle, { force: true })
          sn.push(s)
        }
        const last = { runbook: rb, snap: sn, gcore: gc, 'bare-criu': bare }[which]!.at(-1)!
        log(`${mib} MiB round ${r + 1}: ${which} freeze ${Math.round(last.freezeMs)} ms, total ${Math.round(last.totalMs)} ms`)
      }
    }
    const lastBundle = sn.at(-1)!.bundle
    await killAndWaitFree(t.pid)
    const restore = await restoreComparison(lastBundle, t.pid, work)
    rmSync(work, { recursive: true, force: true })
    rmSync(t.dir, { recursive: true, force: true })
    const row = {
      mib,
      rounds,
      runbook: { freezeMs: median(rb.map((r) => r.freezeMs)), totalMs: median(rb.map((r) => r.totalMs)), bundleBytes: median(rb.map((r) => r.bundleBytes)) },
      snap: {
        freezeMs: median(sn.map((r) => r.freezeMs)),
        reportedFreezeMs: median(sn.map((r) => r.snapFreezeMs!)),
        totalMs: median(sn.map((r) => r.totalMs)),
        bundleBytes: median(sn.map((r) => r.bundleBytes)),
        peakKiB: median(sn.map((r) => r.peakKiB!)),
      },
      gcore: { freezeMs: median(gc.map((r) => r.freezeMs)), totalMs: median(gc.map((r) => r.totalMs)), bundleBytes: median(gc.map((r) => r.bundleBytes)), peakKiB: median(gc.map((r) => r.peakKiB!)) },
      bareCriu: { freezeMs: median(bare.map((r) => r.freezeMs)), totalMs: median(bare.map((r) => r.totalMs)) },
      restore,
    }
    rows.push(row)
    chartRows.push({ mib, runbook: row.runbook.freezeMs, snap: row.gcore.freezeMs, short: row.snap.freezeMs })
    log(`${mib} MiB: done`)
  }
  const shapeRows = process.env.BENCH_SHAPES === '0' ? [] : await shapes()
  // BENCH_CONNECTIONS=0,100,1000 (the default); =none skips it.
  const counts = process.env.BENCH_CONNECTIONS === 'none' ? [] : (process.env.BENCH_CONNECTIONS ?? '0,100,1000').split(',').map(Number)
  const connRows = await connectionsBench({ snapBin, criu, baseDir, rounds, counts, log })
  // BENCH_FIXED=0 skips the fixed costs of a small dump (`criu check` run against remembered).
  const fixedRow = process.env.BENCH_FIXED === '0' ? undefined : await fixedCostsBench({ snapBin, worker, baseDir, rounds, log })
  // BENCH_CORE_ONLY=0 skips --core-only (native and gcore) against bare criu.
  const coreOnlyRows = process.env.BENCH_CORE_ONLY === '0' ? [] : await coreOnlyBench({ snapBin, worker, criu, baseDir, rounds, log })
  const treeRow = process.env.BENCH_TREE === '0' ? undefined : await treeStacksBench({ snapBin, criu, baseDir, rounds, log, workers: Number(process.env.BENCH_TREE_WORKERS ?? 100), perProcess: process.env.BENCH_TREE_OLD !== '0' })
  // BENCH_WATCH=1,100 (the default): the watcher's CPU at 1 s polling on trees of those sizes; =none skips it.
  const watchSizes = process.env.BENCH_WATCH === 'none' ? [] : (process.env.BENCH_WATCH ?? '1,100').split(',').map(Number)
  const watchRows = await watchCpuBench({ snapBin, baseDir, rounds, seconds: Number(process.env.BENCH_WATCH_SECONDS ?? 60), sizes: watchSizes, log })
  // BENCH_SHIP=0 skips a 1 GiB (BENCH_SHIP_MIB) dump plain against --encrypt-to, and its --upload to s3rver.
  const shipRow = process.env.BENCH_SHIP === '0' ? undefined : await shipBench({ snapBin, worker, nodeBin: join(root, 'node_modules/.bin/node'), root, baseDir, rounds, mib: Number(process.env.BENCH_SHIP_MIB ?? 1024), log })
  const startup = startupTimes()
  const peak64 = (rows[0] as { snap: { peakKiB: number } } | undefined)?.snap.peakKiB ?? 1
  const md = [
    ...(rows.length === 0 ? [] : [
    `| target | freeze: runbook | freeze: snap | ratio | total: runbook | total: snap | ratio | snap peak RSS | vs smallest | bundle: runbook | bundle: snap | restore: bare criu | restore: snap after extraction | ratio | restore: snap whole |`,
    `| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |`,
    ...rows.map((r0) => {
      const r = r0 as { mib: number; runbook: { freezeMs: number; totalMs: number; bundleBytes: number }; snap: { freezeMs: number; totalMs: number; bundleBytes: number; peakKiB: number }; restore: { snapMs: number; snapAfterExtractMs: number; criuMs: number } }
      const f = (ms: number) => `${Math.round(ms)} ms`
      const mb = (b: number) => `${(b / 1048576).toFixed(0)} MiB`
      return `| ${r.mib} MiB | ${f(r.runbook.freezeMs)} | ${f(r.snap.freezeMs)} | ${(r.snap.freezeMs / r.runbook.freezeMs).toFixed(2)}x | ${f(r.runbook.totalMs)} | ${f(r.snap.totalMs)} | ${(r.snap.totalMs / r.runbook.totalMs).toFixed(2)}x | ${(r.snap.peakKiB / 1024).toFixed(0)} MiB | ${(r.snap.peakKiB / peak64).toFixed(2)}x | ${mb(r.runbook.bundleBytes)} | ${mb(r.snap.bundleBytes)} | ${f(r.restore.criuMs)} | ${f(r.restore.snapAfterExtractMs)} | ${(r.restore.snapAfterExtractMs / r.restore.criuMs).toFixed(2)}x | ${f(r.restore.snapMs)} |`
    }),
    '',
    `| target | freeze: bare criu dump | freeze: snap | ratio to bare criu | freeze: snap --core gcore | ratio to bare criu | freeze: runbook | snap to runbook | total: snap --core gcore | bundle: snap --core gcore |`,
    `| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |`,
    ...rows.map((r0) => {
      const r = r0 as { mib: number; runbook: { freezeMs: number }; snap: { freezeMs: number }; gcore: { freezeMs: number; totalMs: number; bundleBytes: number }; bareCriu: { freezeMs: number } }
      const f = (ms: number) => `${Math.round(ms)} ms`
      return `| ${r.mib} MiB | ${f(r.bareCriu.freezeMs)} | ${f(r.snap.freezeMs)} | ${(r.snap.freezeMs / r.bareCriu.freezeMs).toFixed(2)}x | ${f(r.gcore.freezeMs)} | ${(r.gcore.freezeMs / r.bareCriu.freezeMs).toFixed(2)}x | ${f(r.runbook.freezeMs)} | ${(r.snap.freezeMs / r.runbook.freezeMs).toFixed(2)}x | ${f(r.gcore.totalMs)} | ${(r.gcore.bundleBytes / 1048576).toFixed(0)} MiB |`
    }),
    '',
    ]),
    ...(shapeRows.length
      ? [
          `| target | freeze: bare criu dump | freeze: snap | freeze: snap --core gcore | snap to gcore | bare criu to gcore | bundle: snap | bundle: snap --core gcore | ratio |`,
          `| --- | --- | --- | --- | --- | --- | --- | --- | --- |`,
          ...shapeRows.map(
            (r) =>
              `| ${r.shape} | ${Math.round(r.bareCriuFreezeMs)} ms | ${Math.round(r.snapFreezeMs)} ms | ${Math.round(r.gcoreFreezeMs)} ms | ${(r.snapFreezeMs / r.gcoreFreezeMs).toFixed(2)}x | ${(r.bareCriuFreezeMs / r.gcoreFreezeMs).toFixed(2)}x | ${(r.snapBundle / 1048576).toFixed(1)} MiB | ${(r.gcoreBundle / 1048576).toFixed(1)} MiB | ${(r.snapBundle / r.gcoreBundle).toFixed(2)}x |`,
          ),
          '',
        ]
      : []),
    ...connectionsTable(connRows),
    ...fixedCostsTable(fixedRow),
    ...coreOnlyTable(coreOnlyRows),
    ...watchCpuTable(watchRows),
    ...treeStacksTable(treeRow),
    ...shipTable(shipRow),
    `Startup: \`snap --version\` ${Math.round(startup.versionMs)} ms, \`snap --help\` ${Math.round(startup.helpMs)} ms, bare \`node -e 0\` ${Math.round(startup.nodeMs)} ms (medians of 7).`,
    `Medians of ${rounds} rounds per size, bare criu, runbook, snap and snap --core gcore alternating. Freeze = the longest gap between the target's own 1 ms ticks.`,
  ].join('\n')
  writeFileSync(join(outDir, 'results.json'), JSON.stringify({ when: new Date().toISOString(), rows, shapes: shapeRows, connections: connRows, fixedCosts: fixedRow, coreOnly: coreOnlyRows, watch: watchRows, tree: treeRow, ship: shipRow, startup }, null, 2) + '\n')
  writeFileSync(join(outDir, 'results.md'), md + '\n')
  writeFileSync(join(outDir, 'freeze.svg'), chart(chartRows))
  process.stdout.write(md + '\n')
  log(`wrote ${outDir}/results.json, results.md, freeze.svg`)
}

await main()
