import { statSync } from 'node:fs'
import { join } from 'node:path'
import { Args, Flags } from '@oclif/core'
import { COMPRESSIONS, type Compression } from '../bundle/compression.js'
import { defaultOutputName } from '../bundle/output-path.js'
import { OutputPathError, SnapError, TargetChangedError, UsageError } from '../errors.js'
import { DumpRun } from '../pipelines/dump.js'
import { silentProgress } from '../pipelines/progress.js'
import { parsePid } from '../process/access.js'
import { captureIdentity } from '../process/identity.js'
import { readStat } from '../process/proc.js'
import { bundleEncryption } from '../ship/encrypt.js'
import { encryptToFlag, keepLocalFlag, uploadFlag } from '../ship/flags.js'
import { chooseRecipients } from '../ship/recipients.js'
import { parseS3Url } from '../ship/s3-location.js'
import { resolveTarget, targetLabel, targetSpec } from '../targets/index.js'
import { targetChoice, targetFlags } from '../targets/flags.js'
import { watch, type CaptureResult, type WatchEvent } from '../watch/loop.js'
import { captureName, planWatch } from '../watch/plan.js'
import { describeEvent } from '../watch/render.js'
import { safeStderr, SnapCommand } from '../ui/base-command.js'

export default class Watch extends SnapCommand {
  static override summary = 'Watch a process and capture it when a trigger fires: CPU, memory, threads, descriptors, its memory cgroup, a failing probe, a signal.'

  static override description =
    'Watch a process and capture it the moment it goes wrong: CPU above or below a threshold, memory, threads, descriptors, its memory cgroup near its limit, a probe that fails (a hang), or a signal to the watcher. Each trigger must hold for --for before it fires; each capture goes through `dump` and its bundle is named after the trigger.'

  static override examples = [
    { description: 'One capture of nginx once its tree burns more than 80% of a CPU for 10 seconds', command: '<%= config.bin %> watch --name nginx --cpu 80 --for 10s' },
    { description: 'Capture a leak before the OOM killer: its memory cgroup at 90% of its limit', command: '<%= config.bin %> watch --unit api.service --cgroup-memory 90 --output-dir /var/tmp/snaps' },
    { description: 'A hang: the health check fails three times in a row', command: '<%= config.bin %> watch --pidfile /run/api.pid --probe http://127.0.0.1:8080/health --probe-timeout 2s --failures 3' },
    { description: 'Up to three captures, a minute apart, until 06:00; one JSON line per event', command: '<%= config.bin %> watch 4242 --rss 2G -n 3 --cooldown 1m --until 06:00 --json' },
    { description: 'A capture each time the watcher gets SIGUSR1 (from a runbook or an alert hook)', command: '<%= config.bin %> watch --name api --on-signal USR1 -n 10' },
    { description: 'A cheap first look: the stacks and the manifest only', command: '<%= config.bin %> watch --name api --cpu 90 --for 30s --then stacks' },
    { description: 'Each capture encrypted and sent to a bucket; the service is followed through its restarts', command: '<%= config.bin %> watch --unit api.service --rss 2G -n 5 --follow --encrypt-to age1... --upload s3://captures/api/' },
  ]

  static override args = {
    pid: Args.string({ description: 'process id of the target (or name it with --name, --pidfile, --cgroup, --unit, --container)', required: false }),
  }

  static override flags = {
    ...targetFlags,
    cpu: Flags.string({ description: "fire when the tree's CPU use is at or above PCT percent of one CPU", helpGroup: 'TRIGGER' }),
    'cpu-below': Flags.string({ description: "fire when the tree's CPU use is below PCT percent of one CPU (a stall)", helpGroup: 'TRIGGER' }),
    rss: Flags.string({ description: 'fire when a process of the tree is resident in SIZE or more (200M, 1.5G)', helpGroup: 'TRIGGER' }),
    threads: Flags.integer({ description: 'fire when the tree has N threads or more', min: 1, helpGroup: 'TRIGGER' }),
    fds: Flags.integer({ description: 'fire when a process of the tree has N file descriptors open or more', min: 1, helpGroup: 'TRIGGER' }),
    'cgroup-memory': Flags.string({ description: "fire when the target's memory cgroup uses PCT percent of its limit or more (v1 and v2)", helpGroup: 'TRIGGER' }),
    probe: Flags.string({ description: 'fire when http://HOST:PORT/PATH (GET) or tcp://HOST:PORT (connect) fails, answers 5xx or exceeds --probe-timeout --failures times in a row', helpGroup: 'TRIGGER' }),
    'probe-timeout': Flags.string({ description: 'how long a probe may take', default: '5s', helpGroup: 'TRIGGER' }),
    failures: Flags.integer({ description: 'failed probes in a row that fire --probe', default: 3, min: 1, helpGroup: 'TRIGGER' }),
    'on-signal': Flags.string({ description: 'capture each time the watcher receives SIG (USR1, USR2 or HUP)', helpGroup: 'TRIGGER' }),
    for: Flags.string({ description: 'how long a trigger must hold before it fires (2s, 1m)', default: '0s', helpGroup: 'TRIGGER' }),
    count: Flags.integer({ char: 'n', description: 'captures to take before the watch ends', default: 1, min: 1 }),
    cooldown: Flags.string({ description: 'time after a capture before any trigger may fire again', default: '0s' }),
    until: Flags.string({ description: 'end the watch at TIME (06:00, 2026-12-08T06:00:00Z) or after DURATION (30m)' }),
    then: Flags.string({
      description: 'what a firing takes: a dump (checkpoint and cores), the cores only, or the stacks only (the cores are written, unwound and left out: the bundle holds the stacks and the manifest)',
      options: ['dump', 'core-only', 'stacks'],
      default: 'dump',
    }),
    follow: Flags.boolean({ description: 'a named target that exits is looked for again each poll, and watched again once it is back (not for a pid)', default: false }),
    'encrypt-to': encryptToFlag,
    upload: uploadFlag,
    'keep-local': keepLocalFlag,
    'output-dir': Flags.string({ description: 'directory for the bundles (named snap-COMM-PID-TRIGGER-N-TIME.tar.zst)', default: '.' }),
    compression: Flags.string({ description: 'bundle compression', options: COMPRESSIONS, default: 'zstd' }),
    criu: Flags.string({ description: 'criu binary to use (as for dump)' }),
    gdb: Flags.string({ description: 'gdb binary to use (as for dump)' }),
    timeout: Flags.integer({ description: 'give up on a capture after this many seconds; the target is put back', min: 1 }),
    json: Flags.boolean({ description: 'one JSON line per event on stdout (watching, fired, captured, skipped, capture-failed, stopped)', default: false, helpGroup: 'GLOBAL' }),
    quiet: Flags.boolean({ char: 'q', description: 'no status line on stderr', default: false }),
  }

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Watch)
    const spec = targetSpec(targetChoice(args.pid, flags), parsePid)
    const plan = planWatch(flags, new Date())
    const outputDir = flags['output-dir']
    if (!statSync(outputDir, { throwIfNoEntry: false })?.isDirectory()) throw new OutputPathError(`--output-dir ${outputDir} is not a directory`, 'create it first')
    if (flags.follow && spec.kind === 'pid') throw new UsageError('--follow is for a named target: a pid is not given again to a restarted process', 'name it with --name, --pidfile, --unit, --cgroup or --container')
    // As for dump, before the target is looked at: a recipient list that is wrong or not trusted stops the watch.
    const recipients = chooseRecipients(flags['encrypt-to'])
    const uploadTo = flags.upload === undefined ? undefined : parseS3Url(flags.upload)
    // The SDK is loaded only for an upload (s3-location.ts).
    const FollowingUpload = uploadTo ? (await import('../ship/s3-follow.js')).FollowingUpload : undefined
    const target = await resolveTarget(spec)
    const identity = captureIdentity(target.pid)
    const label = targetLabel(spec)
    let naming = target.naming

    // The first SIGTERM or Ctrl+C ends the watch after the capture under way, if any; a second one rolls that back.
    const stop = new AbortController()
    const captureCancel = new AbortController()
    let capturing = false
    const onInterrupt = (sig: 'SIGINT' | 'SIGTERM' | 'SIGHUP') => () => {
      if (!stop.signal.aborted) {
        stop.abort(sig)
        if (capturing) safeStderr(`${this.config.bin}: ${sig} received: the capture under way finishes first (again to roll it back), then the watch ends\n`)
      } else if (capturing && !captureCancel.signal.aborted) {
        safeStderr(`${this.config.bin}: ${sig} received again: rolling the capture back\n`)
        captureCancel.abort(sig)
      }
    }
    // SIGHUP ends the watch too, unless it is the signal that asks for captures.
    const ending = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).filter((sig) => !plan.signals.some((s) => s.signal === sig))
    const interrupts = ending.map((sig) => [sig, onInterrupt(sig)] as const)
    for (const [sig, h] of interrupts) process.on(sig, h)
    const unlisten = plan.signals.map((s) => s.listen())

    const status = new StatusLine(flags.quiet)
    const emit = (e: WatchEvent) => {
      status.clear()
      if (flags.json) process.stdout.write(`${JSON.stringify(e)}\n`)
      else {
        if (e.event === 'captured') this.log(e.bundle)
        if (!flags.quiet) safeStderr(`${describeEvent(e)}\n`)
      }
    }
    try {
      const outcome = await watch({
        target: identity,
        label,
        triggers: plan.triggers,
        count: plan.count,
        cooldownMs: plan.cooldownMs,
        untilMs: plan.untilMs,
        stop: stop.signal,
        onEvent: emit,
        onStatus: (line) => status.show(line),
        ...(flags.follow
          ? {
              resolveAgain: async () => {
                try {
                  const back = await resolveTarget(spec)
                  naming = back.naming
                  return captureIdentity(back.pid)
                } catch (e) {
                  // Not back yet (no match, a pidfile naming a dead pid), or two matches while it restarts.
                  if (e instanceof SnapError) return undefined
                  throw e
                }
              },
            }
          : {}),
        capture: async ({ target: now, trigger, record }): Promise<CaptureResult> => {
          capturing = true
          // A fresh file key and upload for each bundle, as each dump makes its own.
          const encryption = recipients ? await bundleEncryption(recipients.recipients) : undefined
          const following = uploadTo && FollowingUpload ? new FollowingUpload(uploadTo) : undefined
          try {
            const comm = readStat(now.pid)?.comm ?? 'process'
            const name = captureName(defaultOutputName(comm, now.pid, new Date(), flags.compression as Compression, encryption !== undefined), now.pid, trigger.kind, record.capture)
            const run = new DumpRun(
              {
                pid: now.pid,
                output: join(outputDir, name),
                compression: flags.compression as Compression,
                criu: flags.criu,
                gdb: flags.gdb,
                timeoutSec: flags.timeout,
                includeEnv: false,
                criuExtraOptions: [],
                coreOnly: flags.then !== 'dump',
                stacksOnly: flags.then === 'stacks',
                cores: 'all',
                encryption,
                ...(following ? { onPartialBundle: (partial: string | undefined, output: string) => following.follow(partial, output) } : {}),
                cancel: captureCancel.signal,
                toolVersion: this.config.version,
                ...(naming.by !== 'pid' ? { naming } : {}),
                watch: record,
              },
              silentProgress,
            )
            let bundle: string
            try {
              bundle = (await run.execute()).bundle
            } catch (e) {
              await following?.abort()
              throw e
            }
            if (!following) return { bundle }
            const uploaded = await following.finish(bundle, flags['keep-local'] ?? false)
            return { bundle, upload: uploaded.url }
          } finally {
            capturing = false
          }
        },
      })
      if (outcome.reason === 'target-gone')
        throw new TargetChangedError(`the target ${identity.pid} (${label}) exited during the watch, after ${outcome.captures} capture(s)`, spec.kind === 'pid' ? 'watch it again once it is back' : 'give --follow to watch it again once it is back')
    } finally {
      status.clear()
      for (const [sig, h] of interrupts) process.off(sig, h)
      for (const u of unlisten) u()
    }
  }
}

/** The status line: redrawn in place on a terminal; elsewhere (a log, a journal) printed once every 30 polls. */
class StatusLine {
  private shown = false
  private polls = 0
  constructor(private readonly quiet: boolean) {}

  show(line: string): void {
    if (this.quiet) return
    if (process.stderr.isTTY) {
      const width = process.stderr.columns ?? 120
      safeStderr(`\r\x1b[K${line.slice(0, width - 1)}`)
      this.shown = true
    } else if (this.polls++ % 30 === 0) safeStderr(`${line}\n`)
  }

  clear(): void {
    if (this.shown) safeStderr('\r\x1b[K')
    this.shown = false
  }
}
