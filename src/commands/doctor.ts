import { Flags } from '@oclif/core'
import { EXIT_CODES } from '../errors.js'
import { diagnose, type DoctorReport } from '../doctor/checks.js'
import { jsonFlag, SnapCommand } from '../ui/base-command.js'
import { renderDoctor } from '../ui/render.js'
import { toolDefaults } from '../tools/locate.js'

export default class Doctor extends SnapCommand {
  static override description =
    'Show what snap would use here (criu, gdb, kernel, permissions, helper programs), what each missing thing rules out, and prove it by dumping and restoring a canary with a listening socket and an established connection.'

  static override examples = [
    { description: 'Check this host before an incident', command: '<%= config.bin %> doctor' },
    { description: 'For monitoring', command: '<%= config.bin %> doctor --json | jq .criu.version' },
    { description: 'Only look, do not run the canary', command: '<%= config.bin %> doctor --no-canary' },
  ]

  static override enableJsonFlag = true

  static override flags = {
    json: jsonFlag,
    criu: Flags.string({ description: `criu binary to check (${toolDefaults('criu')})` }),
    gdb: Flags.string({ description: `gdb binary to check (${toolDefaults('gdb')})` }),
    canary: Flags.boolean({ description: 'dump and restore a canary process (a few seconds); --no-canary only looks', default: true, allowNo: true }),
  }

  async run(): Promise<DoctorReport> {
    const { flags } = await this.parse(Doctor)
    const { controller, dispose } = this.interruptController()
    let report: DoctorReport
    try {
      report = await diagnose(flags, flags.canary ? { toolVersion: this.config.version, cancel: controller.signal } : undefined)
    } finally {
      dispose()
    }
    if (!this.jsonEnabled()) this.log(renderDoctor(report))
    if (!report.ok) process.exitCode = EXIT_CODES.toolMissing.code
    return report
  }
}
