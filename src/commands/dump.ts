import { Args, Flags } from '@oclif/core'
import { COMPRESSIONS, type Compression } from '../bundle/compression.js'
import type { FinalState } from '../bundle/manifest.js'
import { DumpRun, type DumpResult } from '../pipelines/dump.js'
import type { CoreSource } from '../pipelines/dump/state.js'
import { UsageError } from '../errors.js'
import { parsePid } from '../process/access.js'
import { resolveTarget, targetSpec } from '../targets/index.js'
import { targetChoice, targetFlags } from '../targets/flags.js'
import { jsonFlag, SnapCommand } from '../ui/base-command.js'
import { chooseProgressMode, Progress } from '../ui/progress.js'
import { renderDumpResult } from '../ui/render.js'
import { toolDefaults } from '../tools/locate.js'
import { bundleEncryption } from '../ship/encrypt.js'
import { encryptToFlag, keepLocalFlag, uploadFlag } from '../ship/flags.js'
import { chooseRecipients } from '../ship/recipients.js'
import { parseS3Url, type UploadResult } from '../ship/s3-location.js'
import { humanBytes } from '../bundle/output-path.js'

/** Whom the bundle was encrypted for, in the result: the recipients and where they came from. */
export interface DumpEncryption {
  format: 'age'
  recipients: string[]
  from: string
}

export default class Dump extends SnapCommand {
  static override description =
    'Capture a live process and its whole tree (a master and its workers): stop every process with SIGSTOP (verified), take a CRIU checkpoint, put each process back as it was found, build a core of each from the checkpoint, and seal everything in one bundle.'

  static override examples = [
    { description: 'Capture pid 4242 into a bundle in the current directory', command: '<%= config.bin %> dump 4242' },
    { description: 'Capture into a chosen file and leave the process stopped for a closer look', command: '<%= config.bin %> dump 4242 -o /var/tmp/api.snap.tar.zst --leave stopped' },
    { description: 'Machine-readable result for a runbook', command: '<%= config.bin %> dump 4242 --json > result.json' },
    { description: 'Cores written by gdb while the tree is frozen (a longer freeze)', command: '<%= config.bin %> dump 4242 --core gcore' },
    { description: 'Cores of every process without a checkpoint, for what criu cannot dump (io_uring, SysV shm, another uid)', command: '<%= config.bin %> dump 4242 --core-only' },
    { description: 'The service by name (its comm, or a pattern over its command line): exactly one tree may match', command: '<%= config.bin %> dump --name nginx' },
    { description: 'The service by its pidfile, or by its systemd unit', command: '<%= config.bin %> dump --pidfile /run/api.pid' },
    { description: 'Encrypted for two analysts (age): no plaintext byte of the bundle reaches the disk', command: '<%= config.bin %> dump 4242 --encrypt-to age1... --encrypt-to /etc/procsnap/analysts' },
    { description: 'Then into a bucket, with its sha256 beside it', command: '<%= config.bin %> dump 4242 --encrypt-to age1... --upload s3://captures/api/' },
  ]

  static override enableJsonFlag = true

  static override args = {
    pid: Args.string({ description: 'process id of the target (or name it with --name, --pidfile, --cgroup, --unit, --container)', required: false }),
  }

  static override flags = {
    ...targetFlags,
    json: jsonFlag,
    output: Flags.string({ char: 'o', description: 'bundle file to write (default: snap-COMM-PID-TIME.tar.zst in the current directory)' }),
    leave: Flags.string({ description: 'final state of the target (default: the state it was found in)', options: ['running', 'stopped', 'killed'] }),
    compression: Flags.string({ description: 'bundle compression', options: COMPRESSIONS, default: 'zstd' }),
    criu: Flags.string({ description: `criu binary to use (${toolDefaults('criu')})` }),
    gdb: Flags.string({ description: `gdb binary to use (${toolDefaults('gdb')})` }),
    timeout: Flags.integer({ description: 'give up after this many seconds; the target is put back', min: 1 }),
    'include-binaries': Flags.boolean({
      description: 'store the executable and every library the tree maps in the bundle, so `snap stacks` and `snap debug` name every frame on a host without them',
      default: false,
    }),
    'include-env': Flags.boolean({ description: 'record environment VALUES in the manifest (by default only names: values hold secrets)', default: false }),
    'criu-opt': Flags.string({ description: 'extra criu dump option, recorded and repeated at restore (e.g. --tcp-established)', multiple: true }),
    sign: Flags.string({ description: 'sign the manifest with this Ed25519 private key (from `snap keygen`)' }),
    'encrypt-to': encryptToFlag,
    upload: uploadFlag,
    'keep-local': keepLocalFlag,
    core: Flags.string({
      description:
        'where the cores come from: "images" builds them from the CRIU images after the tree is released, so the tree is frozen only while criu dumps (the default); "gcore" has gdb write them while the tree is still frozen (slower: the freeze grows with the mapped memory); "native" (the default with --core-only) has snap write them from /proc while the tree is stopped (the freeze grows with the resident memory)',
      options: ['images', 'gcore', 'native'],
    }),
    // Hidden, so it names the flags it excludes itself: in core-only's list it would print as an empty alternative
    // in the usage line (`[--core-only |  | --core ...]`). oclif checks exclusive from either side.
    'short-freeze': Flags.boolean({ description: 'the same as --core images', default: false, hidden: true, exclusive: ['core', 'core-only'] }),
    'core-only': Flags.boolean({
      description: 'take the cores only (written by snap from /proc; --core gcore has gdb write them), no CRIU checkpoint (the bundle cannot be restored): for a tree criu cannot dump',
      default: false,
      exclusive: ['criu-opt'],
    }),
    cores: Flags.string({ description: 'which processes get a core: every process of the tree, or the root only', options: ['all', 'root'], default: 'all' }),
    quiet: Flags.boolean({ char: 'q', description: 'no progress on stderr', default: false }),
    'skip-criu-check': Flags.boolean({ hidden: true, default: false }),
  }

  async run(): Promise<DumpResult & { encryption?: DumpEncryption; upload?: UploadResult }> {
    const { args, flags } = await this.parse(Dump)
    // The images are what --core images builds from, and the native writer reads a tree no criu holds.
    if (flags['core-only'] && flags.core === 'images')
      throw new UsageError('--core images builds the cores from a checkpoint, and --core-only takes none', 'give --core native or --core gcore with --core-only')
    if (!flags['core-only'] && flags.core === 'native') throw new UsageError('--core native is for --core-only', 'add --core-only, or give --core images or --core gcore')
    // Before the target is looked at: a recipient list that is wrong or not trusted stops the dump before any signal.
    const recipients = chooseRecipients(flags['encrypt-to'])
    const encryption = recipients ? await bundleEncryption(recipients.recipients) : undefined
    // The upload follows the bundle while it is sealed, and is finished once it is whole.
    // The SDK is loaded only for an upload (s3-location.ts).
    const following = flags.upload === undefined ? undefined : new (await import('../ship/s3-follow.js')).FollowingUpload(parseS3Url(flags.upload))
    const target = await resolveTarget(targetSpec(targetChoice(args.pid, flags), parsePid))
    const pid = target.pid
    const { controller, dispose } = this.interruptController()
    try {
      const run = new DumpRun(
        {
          pid,
          output: flags.output,
          leave: flags.leave as FinalState | undefined,
          compression: flags.compression as Compression,
          criu: flags.criu,
          gdb: flags.gdb,
          timeoutSec: flags.timeout,
          includeEnv: flags['include-env'],
          includeBinaries: flags['include-binaries'],
          criuExtraOptions: flags['criu-opt'] ?? [],
          skipCriuCheck: flags['skip-criu-check'],
          core: flags['short-freeze'] ? 'images' : (flags.core as CoreSource | undefined),
          coreOnly: flags['core-only'],
          cores: flags.cores as 'all' | 'root',
          signKeyPath: flags.sign,
          encryption,
          ...(following ? { onPartialBundle: (partial: string | undefined, output: string) => following.follow(partial, output) } : {}),
          cancel: controller.signal,
          toolVersion: this.config.version,
          ...(target.naming.by !== 'pid' ? { naming: target.naming } : {}),
        },
        new Progress(chooseProgressMode({ quiet: flags.quiet })),
      )
      let result: DumpResult
      try {
        result = await run.execute()
      } catch (e) {
        await following?.abort()
        throw e
      }
      const sealedFor = recipients ? { encryption: { format: 'age' as const, recipients: recipients.recipients, from: recipients.from } } : {}
      if (!this.jsonEnabled()) {
        this.log(renderDumpResult(result))
        if (recipients) this.log(`encrypted     age, for ${recipients.recipients.join(', ')} (from ${recipients.from})`)
      }
      if (!following) return { ...result, ...sealedFor }
      if (!flags.quiet) process.stderr.write(`uploading ${result.bundle} to ${flags.upload}\n`)
      const uploaded = await following.finish(result.bundle, flags['keep-local'] ?? false)
      if (!this.jsonEnabled()) this.log(`uploaded      ${uploaded.url} (${humanBytes(uploaded.size)}, ${humanBytes(uploaded.whileSealed ?? 0)} of it while it was sealed; sha256 ${uploaded.sha256}${uploaded.kept ? '; kept here too' : '; removed here'})`)
      return { ...result, ...sealedFor, upload: uploaded }
    } finally {
      dispose()
    }
  }
}
