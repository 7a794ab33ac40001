// Writes, from the built commands, what `npm run setup` installs beside the program: the man page
// (src/ui/man-page.ts) and the bash completion (src/ui/completion.ts), one of each for each name the program
// answers to, into dist/man/ and dist/completion/.
import { mkdirSync, writeFileSync } from 'node:fs'
import { Config } from '@oclif/core'
import { EXIT_CODES } from '../dist/errors.js'
import { CLI_NAMES } from '../dist/ui/cli-name.js'
import { completionScript } from '../dist/ui/completion.js'
import { manPage } from '../dist/ui/man-page.js'

const root = new URL('..', import.meta.url).pathname
const config = await Config.load(root)
mkdirSync(new URL('../dist/man/', import.meta.url), { recursive: true })
mkdirSync(new URL('../dist/completion/', import.meta.url), { recursive: true })
for (const bin of CLI_NAMES) {
  const page = manPage(
    {
      bin,
      version: config.version,
      summary: config.pjson.description,
      date: new Date().toISOString().slice(0, 10),
      exitCodes: Object.values(EXIT_CODES).map((x) => ({ code: x.code, meaning: x.meaning })),
    },
    config.commands,
  )
  writeFileSync(new URL(`../dist/man/${bin}.1`, import.meta.url), page)
  writeFileSync(new URL(`../dist/completion/${bin}`, import.meta.url), completionScript('bash', bin, config.commands))
}
process.stderr.write(`setup: man pages and bash completion for ${config.commands.filter((c) => !c.hidden).length} commands\n`)
