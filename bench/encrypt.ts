// What shipping a capture costs: `snap dump` of a 1 GiB worker plain, then --encrypt-to (age), alternating, for the
// time ratio and snap's peak RSS; then one --upload of the same target to s3rver on 127.0.0.1, for its peak RSS.
// One target for all of it, in the same run.

import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { generateX25519Identity, identityToRecipient } from 'age-encryption'
import { runSampled } from './sampled.ts'
import { median, until } from './common.ts'

export interface ShipRow {
  mib: number
  rounds: number
  plainMs: number
  encryptedMs: number
  plainPeakKiB: number
  encryptedPeakKiB: number
  plainBytes: number
  encryptedBytes: number
  upload: { ms: number; peakKiB: number; bytes: number } | undefined
}

interface Options {
  snapBin: string
  worker: string
  nodeBin: string
  root: string
  baseDir: string
  rounds: number
  mib: number
  log: (s: string) => void
}

async function startS3(o: Options, work: string): Promise<{ pid: number; endpoint: string }> {
  const data = join(work, 's3-data')
  const child = spawn(o.nodeBin, [join(o.root, 'node_modules/s3rver/bin/s3rver.js'), '-d', data, '-a', '127.0.0.1', '-p', '0', '--configure-bucket', 'captures'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr.on('data', (c: Buffer) => (out += c.toString()))
  const port = await until(() => /listening on 127\.0\.0\.1:(\d+)/.exec(out)?.[1], `s3rver to listen (${out})`, 20_000)
  return { pid: child.pid!, endpoint: `http://127.0.0.1:${port}` }
}

export async function shipBench(o: Options): Promise<ShipRow> {
  const work = mkdtempSync(join(o.baseDir, 'snap-bench-ship-'))
  const progress = join(work, 'progress')
  const target = spawn(o.worker, ['--threads', '4', '--mib', String(o.mib), '--progress', progress, '--tick-ms', '1', '--setsid'], { stdio: 'ignore' })
  target.unref()
  const pid = target.pid!
  let s3: { pid: number; endpoint: string } | undefined
  try {
    await until(() => existsSync(progress) && Number(/ticks=(\d+)/.exec(readFileSync(progress, 'utf8'))?.[1] ?? 0) > 0 && readdirSync(`/proc/${pid}/task`).length === 4, 'the target to be ready', 60_000 + o.mib * 20)
    const recipient = await identityToRecipient(await generateX25519Identity())
    const env = { ...process.env, PROCSNAP_JOURNAL_DIR: work }
    const plain: Awaited<ReturnType<typeof runSampled>>[] = []
    const encrypted: Awaited<ReturnType<typeof runSampled>>[] = []
    const sizes = { plain: 0, encrypted: 0 }
    for (let r = 0; r < o.rounds; r++) {
      for (const which of r % 2 ? (['encrypted', 'plain'] as const) : (['plain', 'encrypted'] as const)) {
        const out = join(work, `${which}.tar.zst`)
        const args = ['dump', String(pid), '-o', out, '--json', '-q', ...(which === 'encrypted' ? ['--encrypt-to', recipient] : [])]
        // As before every measured run of the bench (run.ts): the last run's writeback must not fall into this one.
        spawnSync('sync', [], { stdio: 'ignore' })
        const run = await runSampled(o.snapBin, args, env)
        if (run.code !== 0) throw new Error(`snap dump (${which}) failed with ${run.code}: ${run.stdout}`)
        sizes[which] = statSync(out).size
        rmSync(out, { force: true })
        ;(which === 'plain' ? plain : encrypted).push(run)
        o.log(`ship ${o.mib} MiB round ${r + 1}: ${which} ${Math.round(run.ms)} ms, peak ${Math.round(run.peakKiB / 1024)} MiB`)
      }
    }
    s3 = await startS3(o, work)
    const upload = await runSampled(o.snapBin, ['dump', String(pid), '-o', join(work, 'up.tar.zst'), '--json', '-q', '--upload', 's3://captures/bench/'], {
      ...env,
      AWS_ENDPOINT_URL: s3.endpoint,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      AWS_CONFIG_FILE: '/dev/null',
      AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
    })
    if (upload.code !== 0) throw new Error(`snap dump --upload failed with ${upload.code}: ${upload.stdout}`)
    const uploaded = JSON.parse(upload.stdout) as { upload?: { size?: number } }
    o.log(`ship ${o.mib} MiB upload: ${Math.round(upload.ms)} ms, peak ${Math.round(upload.peakKiB / 1024)} MiB`)
    return {
      mib: o.mib,
      rounds: o.rounds,
      plainMs: median(plain.map((r) => r.ms)),
      encryptedMs: median(encrypted.map((r) => r.ms)),
      plainPeakKiB: Math.max(...plain.map((r) => r.peakKiB)),
      encryptedPeakKiB: Math.max(...encrypted.map((r) => r.peakKiB)),
      plainBytes: sizes.plain,
      encryptedBytes: sizes.encrypted,
      upload: { ms: upload.ms, peakKiB: upload.peakKiB, bytes: uploaded.upload?.size ?? 0 },
    }
  } finally {
    if (s3) process.kill(s3.pid, 'SIGKILL')
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // gone
    }
    rmSync(work, { recursive: true, force: true })
  }
}

export function shipTable(row: ShipRow | undefined): string[] {
  if (!row) return []
  const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`
  const m = (kib: number) => `${Math.round(kib / 1024)} MiB`
  return [
    `| ${row.mib} MiB target | total: plain | total: --encrypt-to | ratio | peak RSS: plain | peak RSS: --encrypt-to | bundle: plain | bundle: encrypted | --upload to s3rver: total | --upload: peak RSS |`,
    `| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |`,
    `| medians of ${row.rounds}, alternating | ${s(row.plainMs)} | ${s(row.encryptedMs)} | ${(row.encryptedMs / row.plainMs).toFixed(2)}x | ${m(row.plainPeakKiB)} | ${m(row.encryptedPeakKiB)} | ${(row.plainBytes / 1048576).toFixed(0)} MiB | ${(row.encryptedBytes / 1048576).toFixed(0)} MiB | ${row.upload ? s(row.upload.ms) : '-'} | ${row.upload ? m(row.upload.peakKiB) : '-'} |`,
    '',
  ]
}
