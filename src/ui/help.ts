// oclif's help, in the name snap was invoked by: flag and argument descriptions are not templated by oclif
// (only descriptions and examples are), so the finished text is given the invoked name as it is printed.

import { Help } from '@oclif/core'
import { asInvoked, setCliName } from './cli-name.js'

export default class SnapHelp extends Help {
  protected override log(...args: string[]): void {
    setCliName(this.config.bin)
    super.log(...args.map((a) => asInvoked(a)))
  }
}
