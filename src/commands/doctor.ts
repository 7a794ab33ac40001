import { Flags } from '@oclif/core'
import { EXIT_CODES } from '../errors.js'
import { diagnose, type DoctorReport } from '../tools/doctor.js'
import { SnapCommand } from '../ui/base-command.js'
import { renderDoctor } from '../ui/render.js'

export default class Doctor extends SnapCommand {
  static override description = 'Show what snap would use here (criu, gdb, kernel, permissions) and what is wrong, with the fix.'

  static override examples = [
    { description: 'Check this host before an incident', command: '<%= config.bin %> doctor' },
    { description: 'For monitoring', command: '<%= config.bin %> doctor --json | jq .criu.version' },
  ]

  static override enableJsonFlag = true

  static override flags = {
    criu: Flags.string({ description: 'criu binary to check (default: $SNAP_CRIU, then PATH)' }),
    gdb: Flags.string({ description: 'gdb binary to check (default: $SNAP_GDB, then PATH)' }),
  }

  async run(): Promise<DoctorReport> {
    const { flags } = await this.parse(Doctor)
    const report = await diagnose(flags)
    if (!this.jsonEnabled()) this.log(renderDoctor(report))
    if (!report.ok) process.exitCode = EXIT_CODES.toolMissing.code
    return report
  }
}
