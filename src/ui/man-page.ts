// procsnap(1), generated from the commands themselves (their descriptions, arguments, flags and examples), so the
// page says what the program does. Written at build; `npm run setup` puts it where man finds it.

import { asInvoked } from './cli-name.js'

export interface ManArg {
  name: string
  description?: string
  required?: boolean
}

export interface ManFlag {
  name: string
  char?: string
  description?: string
  type: 'boolean' | 'option'
  options?: readonly string[]
  default?: unknown
  hidden?: boolean
  helpGroup?: string
}

export interface ManCommand {
  id: string
  description?: string
  hidden?: boolean
  args: Record<string, ManArg>
  flags: Record<string, ManFlag>
  examples?: (string | { description: string; command: string })[]
}

export interface ManPageFacts {
  bin: string
  version: string
  summary: string
  date: string
  exitCodes: { code: number; meaning: string }[]
}

/** Text for roff: backslashes doubled, a line never starting with a control character, hyphens kept as typed. */
export function roffText(s: string): string {
  return s
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((l) => (/^[.']/.test(l) ? `\\&${l}` : l))
    .join('\n')
}

const withBin = (s: string, bin: string) => asInvoked(s.replace(/<%= config\.bin %>/g, bin), bin)

export function manPage(facts: ManPageFacts, commands: ManCommand[]): string {
  const { bin } = facts
  const T = (s: string) => roffText(withBin(s, bin))
  const visible = commands.filter((c) => !c.hidden).sort((a, b) => a.id.localeCompare(b.id))
  const out: string[] = [
    `.TH ${bin.toUpperCase()} 1 "${facts.date}" "${bin} ${facts.version}" "User Commands"`,
    '.SH NAME',
    `${bin} \\- ${T(facts.summary)}`,
    '.SH SYNOPSIS',
    `.B ${bin}`,
    '.I COMMAND',
    '[\\fIARGS\\fR] [\\fIFLAGS\\fR]',
    '.br',
    `.B ${bin}`,
    '.BR \\-\\-help " | " \\-h " | " \\-\\-version',
    '.SH DESCRIPTION',
    T(facts.summary),
    '.PP',
    `The same program is installed as \\fBprocsnap\\fR and, where no other program owns the name, as \\fBsnap\\fR.`,
    '.SH COMMANDS',
  ]
  for (const c of visible) {
    const args = Object.values(c.args)
    out.push('.SS ' + [`${bin} ${c.id}`, ...args.map((a) => (a.required ? a.name.toUpperCase() : `[${a.name.toUpperCase()}]`))].join(' '))
    if (c.description) out.push(T(c.description))
    for (const a of args) out.push('.TP', `.I ${a.name.toUpperCase()}`, T(a.description ?? ''))
    for (const f of Object.values(c.flags).filter((f) => !f.hidden && f.helpGroup !== 'GLOBAL' && f.name !== 'json')) {
      const name = `${f.char ? `\\-${f.char}, ` : ''}\\-\\-${roffText(f.name)}${f.type === 'option' ? (f.options ? ` ${f.options.map(roffText).join('|')}` : ' \\fIVALUE\\fR') : ''}`
      const dflt = f.type === 'option' && f.default !== undefined && typeof f.default !== 'function' ? ` (default: ${T(String(f.default))})` : ''
      out.push('.TP', `.B ${name}`, T(f.description ?? '') + dflt)
    }
    if (Object.values(c.flags).some((f) => f.name === 'json')) out.push('.TP', '.B \\-\\-json', 'one JSON document on stdout (progress stays on stderr)')
    for (const e of c.examples ?? []) {
      const { description, command } = typeof e === 'string' ? { description: '', command: e } : e
      out.push('.PP', description ? T(description) + ':' : '', '.RS 4', '.nf', `\\fB${T(command)}\\fR`, '.fi', '.RE')
    }
  }
  out.push(
    '.SH GLOBAL FLAGS',
    '.TP', '.B \\-\\-no\\-color', 'no colour or other escape sequences; the environment variable \\fBNO_COLOR\\fR does the same',
    '.TP', '.B \\-\\-debug', 'stack traces for errors',
    '.TP', '.BR \\-h ", " \\-\\-help', 'help for the program or for one command',
    '.SH EXIT STATUS',
  )
  for (const x of facts.exitCodes) out.push('.TP', `.B ${x.code}`, T(x.meaning))
  out.push('.SH FILES', '.TP', '.I /etc/procsnap/trusted\\-keys/', 'public keys whose signatures restore trusts', '.SH SEE ALSO', '.BR criu (8), ' + '.BR gdb (1), ' + '.BR gcore (1)')
  return out.filter((l) => l !== '').join('\n') + '\n'
}
