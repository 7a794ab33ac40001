#!/usr/bin/env node
// Runs the built CLI (dist/). `npm run setup` builds it.
//
// `snap --version` is answered here, without loading oclif: importing it alone takes about 0.12 s here, most of the
// time the command took, and the answer needs nothing from it. The line has oclif's own format.
import { readFileSync } from 'node:fs'
import { basename } from 'node:path'
import { fileURLToPath } from 'node:url'

// The name typed (`procsnap`, or `snap` where snapd does not own it): bin/snap passes it, as it runs this file.
// Every help and error text uses it. It is not passed on to what snap runs.
const typed = process.env.PROCSNAP_INVOKED_AS ?? basename(process.argv[1] ?? 'snap')
delete process.env.PROCSNAP_INVOKED_AS
const name = ['snap', 'procsnap'].includes(typed) ? typed : 'snap'

// The CLI's libraries need Node.js 22: an older one fails deep inside them (`TEXT_ENCODINGS.union is not a function`,
// `command doctor not found`). Said here, in one line, before any of them loads.
const major = Number(process.versions.node.split('.')[0])
if (major < 22) {
  process.stderr.write(`${name}: error: Node.js ${process.versions.node} is too old (need >= 22); run \`npm run setup\` (it installs Node 24 beside the code) or put a Node >= 22 first on PATH\n`)
  process.exit(6)
}

const args = process.argv.slice(2)
const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
if (args.length === 1 && (args[0] === '--version' || args[0] === 'version')) {
  process.stdout.write(`${pkg.name}/${pkg.version} ${process.platform}-${process.arch} node-${process.version}\n`)
} else {
  // Modules compiled once and kept (src/tools/compile-cache.ts): about 40 ms of every command's start.
  await import('../dist/tools/compile-cache.js').then((m) => m.enableCompileCache()).catch(() => undefined)
  const { execute, settings } = await import('@oclif/core')
  // Always the built code: with NODE_ENV=development or test, oclif would otherwise look for the TypeScript sources
  // and load the compiler to read tsconfig.json (40 MiB more, every command), whatever the shell it runs from.
  settings.enableAutoTranspile = false
  // oclif takes its program name (config.bin) from package.json: given the one typed.
  const pjson = { ...pkg, oclif: { ...pkg.oclif, bin: name } }
  // A reader that goes away (`procsnap dump --help | head -1`) closes stdout: the rest of the output is dropped and the
  // command goes on (a dump still puts its target back). oclif then waits for a drain that never comes, so execute()
  // is not awaited here: an unsettled top-level await would end the program with a warning and exit code 13.
  process.stdout.on('error', () => undefined)
  void execute({ loadOptions: { root: fileURLToPath(new URL('..', import.meta.url)), pjson } })
}
