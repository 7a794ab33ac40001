// The name snap was started by. The same program is installed as `procsnap` and, where no other program owns the
// name, as `snap` (on Ubuntu, `snap` is snapd's). A hint that says `snap recover` to someone who typed `procsnap`
// sends them to snapd. Texts name commands as `snap X`; what reaches the user names them as they were typed.

let name = 'snap'

/** The names the launcher answers to; anything else (a renamed copy) is spoken of as `snap`. */
export const CLI_NAMES = ['snap', 'procsnap'] as const

export function cliName(): string {
  return name
}

/** Set once, from what the launcher was invoked as (oclif's config.bin, set by bin/run.js). */
export function setCliName(invoked: string | undefined): void {
  name = (CLI_NAMES as readonly string[]).includes(invoked ?? '') ? invoked! : 'snap'
}

/** Every command quoted in backticks (`snap recover PID`) and the `snap:` line prefix, in the invoked name (or `as`). */
export function asInvoked(text: string, as: string = name): string {
  if (as === 'snap') return text
  return text.replace(/`snap(?=[\s`])/g, '`' + as).replace(/^snap(?=: )/gm, as)
}
