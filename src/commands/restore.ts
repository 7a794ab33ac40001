import { Args, Flags } from '@oclif/core'
import { UsageError } from '../errors.js'
import type { IsolationOptions } from '../pipelines/restore/isolate.js'
import { RestoreRun, type RestoreResult } from '../pipelines/restore/index.js'
import { toolDefaults } from '../tools/locate.js'
import { jsonFlag, SnapCommand } from '../ui/base-command.js'
import { chooseProgressMode, Progress } from '../ui/progress.js'
import { renderRestoreResult } from '../ui/render.js'
import { useIdentityFiles } from '../ship/decrypt.js'
import { identityFlag } from '../ship/flags.js'

export default class Restore extends SnapCommand {
  static override description =
    'Bring a captured process back with CRIU: verify the bundle, extract it privately, check this host can take it, restore, and confirm the result in /proc.'

  static override examples = [
    { description: 'Restore in the state it was captured in', command: '<%= config.bin %> restore snap-api-4242-20261123T030000Z.tar.zst' },
    { description: 'Restore and let it run, even if it was captured paused', command: '<%= config.bin %> restore bundle.tar.zst --resume' },
    { description: 'The original still runs: a copy sealed off from its clients and peers, its port 8080 reached on the host\'s 127.0.0.1:18080', command: '<%= config.bin %> restore bundle.tar.zst --isolate --publish 18080:8080' },
    { description: 'The same, capped at half a CPU and 2 GiB', command: '<%= config.bin %> restore bundle.tar.zst --isolate --cpu 0.5 --memory 2G' },
    { description: 'Trust a signature by this key (or put it in /etc/procsnap/trusted-keys/)', command: '<%= config.bin %> restore bundle.tar.zst --key team.key.pub' },
  ]

  static override enableJsonFlag = true

  static override args = { bundle: Args.string({ description: 'bundle written by `snap dump`', required: true }) }

  static override flags = {
    json: jsonFlag,
    identity: identityFlag,
    resume: Flags.boolean({ description: 'leave the restored process running', exclusive: ['leave-stopped'], default: false }),
    'leave-stopped': Flags.boolean({ description: 'leave the restored process stopped', exclusive: ['resume'], default: false }),
    'new-pidns': Flags.boolean({ description: 'restore into a new pid namespace, so the old pids need not be free (refused while the original runs: use --isolate)', default: false }),
    isolate: Flags.boolean({
      description: 'restore a copy in new pid, network, mount, IPC and UTS namespaces: its connections closed, nothing leaves them (the way to study a capture while the original runs)',
      default: false,
    }),
    publish: Flags.string({ description: "with --isolate: forward the host's 127.0.0.1:HOSTPORT to the copy's PORT (HOSTPORT:PORT, repeatable)", multiple: true, dependsOn: ['isolate'] }),
    cpu: Flags.string({ description: 'with --isolate: cap the copy at this many CPUs (e.g. 0.5)', dependsOn: ['isolate'] }),
    memory: Flags.string({ description: 'with --isolate: cap the copy\'s memory (e.g. 512M, 2G)', dependsOn: ['isolate'] }),
    criu: Flags.string({ description: `criu binary to use (${toolDefaults('criu')})` }),
    'work-dir': Flags.string({ description: 'where to extract the images (a private directory is made inside; default: the system temp dir)' }),
    timeout: Flags.integer({ description: 'give up after this many seconds; anything partly restored is killed', min: 1 }),
    key: Flags.string({ description: 'trust only a signature by this Ed25519 public key (default: the keys in $PROCSNAP_TRUSTED_KEYS, else /etc/procsnap/trusted-keys/)' }),
    'tcp-close': Flags.boolean({ description: 'restore its TCP connections closed (for study away from its peers; criu --tcp-close)', default: false }),
    'criu-opt': Flags.string({ description: 'extra criu restore option, given as it is (e.g. --tcp-close)', multiple: true }),
    'allow-unsigned': Flags.boolean({ description: 'restore a bundle that is not signed (its images run as root); warned and recorded', default: false }),
    quiet: Flags.boolean({ char: 'q', description: 'no progress on stderr', default: false }),
  }

  async run(): Promise<RestoreResult> {
    // criu's --tcp-close given through --criu-opt is snap's own --tcp-close: the parser takes a value that names one of
    // the command's flags for a missing value ("Flag --criu-opt expects a value").
    this.argv = this.argv.map((a) => (a === '--criu-opt=--tcp-close' ? '--tcp-close' : a))
    const { args, flags } = await this.parse(Restore)
    useIdentityFiles(flags.identity ?? [])
    const { controller, dispose } = this.interruptController()
    try {
      const result = await new RestoreRun(
        {
          bundle: args.bundle,
          final: flags.resume ? 'running' : flags['leave-stopped'] ? 'stopped' : undefined,
          newPidns: flags['new-pidns'] || flags.isolate,
          isolate: flags.isolate ? parseIsolation(flags.publish ?? [], flags.cpu, flags.memory) : undefined,
          criu: flags.criu,
          workDirParent: flags['work-dir'],
          timeoutSec: flags.timeout,
          publicKey: flags.key,
          allowUnsigned: flags['allow-unsigned'],
          tcpClose: flags['tcp-close'],
          criuExtraOptions: flags['criu-opt'] ?? [],
          cancel: controller.signal,
        },
        new Progress(chooseProgressMode({ quiet: flags.quiet })),
      ).execute()
      if (!this.jsonEnabled()) this.log(renderRestoreResult(result))
      return result
    } finally {
      dispose()
    }
  }
}

/** --publish HOSTPORT:PORT (or PORT for both), --cpu N, --memory SIZE: checked before anything is read. */
export function parseIsolation(publish: string[], cpu: string | undefined, memory: string | undefined): IsolationOptions {
  const port = (text: string, what: string): number => {
    const n = Number(text)
    if (!/^\d{1,5}$/.test(text) || n < 1 || n > 65535) throw new UsageError(`--publish ${what}: ${JSON.stringify(text)} is not a port`, 'give --publish HOSTPORT:PORT, each a number from 1 to 65535')
    return n
  }
  const pairs = publish.map((p) => {
    const [a, b, ...rest] = p.split(':')
    if (rest.length > 0 || a === undefined) throw new UsageError(`--publish ${JSON.stringify(p)} is not HOSTPORT:PORT`, 'give --publish 18080:8080 to reach the copy\'s port 8080 on the host\'s 127.0.0.1:18080')
    return { hostPort: port(a, p), port: port(b ?? a, p) }
  })
  const taken = pairs.map((p) => p.hostPort).find((h, i, all) => all.indexOf(h) !== i)
  if (taken !== undefined) throw new UsageError(`--publish names host port ${taken} twice`, 'give each published port its own host port')
  let cpus: number | undefined
  if (cpu !== undefined) {
    cpus = Number(cpu)
    if (!/^\d+(\.\d+)?$/.test(cpu) || cpus < 0.01 || cpus > 1024) throw new UsageError(`--cpu ${JSON.stringify(cpu)} is not a number of CPUs`, 'give --cpu 0.5 for half of one CPU, 2 for two')
  }
  let memoryBytes: number | undefined
  if (memory !== undefined) {
    const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?$/i.exec(memory)
    const scale = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[(m?.[2] ?? '').toUpperCase() as '' | 'K' | 'M' | 'G' | 'T']
    memoryBytes = m ? Math.floor(Number(m[1]) * scale) : NaN
    if (!m || !(memoryBytes >= 16 * 1024 * 1024)) throw new UsageError(`--memory ${JSON.stringify(memory)} is not a size of at least 16M`, 'give --memory 512M or 2G')
  }
  return { publish: pairs, ...(cpus !== undefined ? { cpus } : {}), ...(memoryBytes !== undefined ? { memoryBytes } : {}) }
}
