// An unknown command (`snap dumpp 4242`): one line in snap's error format, the nearest command named, exit 2 (usage),
// and with --json the same error as every other command's. Without this hook oclif prints ` ›   Error: command
// dumpp:4242 not found`, which names an argument as part of the command and is no format of snap's.

import type { Hook } from '@oclif/core'
import { EXIT_CODES } from '../errors.js'

/** Levenshtein distance, for "did you mean": command names are a few letters. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const next = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = row[j]!
      row[j] = next
    }
  }
  return row[b.length]!
}

/** The command closest to `typed`, when it is close enough to be what was meant. */
export function nearestCommand(typed: string, commands: string[]): string | undefined {
  let best: { id: string; d: number } | undefined
  for (const id of commands) {
    const d = id.startsWith(typed) && typed.length >= 2 ? 0 : distance(typed, id)
    if (!best || d < best.d) best = { id, d }
  }
  return best && best.d <= Math.max(1, Math.floor(best.id.length / 3)) ? best.id : undefined
}

const hook: Hook<'command_not_found'> = async function (opts) {
  // oclif joins the words it could not place with its topic separator: the command is the first of them.
  const typed = opts.id.split(':')[0] ?? opts.id
  const bin = opts.config.bin
  const nearest = nearestCommand(typed, opts.config.commandIDs)
  const message = `unknown command ${JSON.stringify(typed)}`
  const hint = nearest ? `did you mean \`${bin} ${nearest}\`? \`${bin} --help\` lists the commands` : `\`${bin} --help\` lists the commands`
  if ((opts.argv ?? []).includes('--json') || process.argv.includes('--json')) {
    process.stdout.write(JSON.stringify({ error: { kind: 'usage', exitCode: 2, message, hint, meaning: EXIT_CODES.usage.meaning } }, null, 2) + '\n')
  }
  process.stderr.write(`${bin}: error: ${message}; ${hint}\n`)
  process.exit(EXIT_CODES.usage.code)
}

export default hook
