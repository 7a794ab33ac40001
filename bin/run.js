#!/usr/bin/env node
// Runs the built CLI (dist/). `npm run setup` builds it.
//
// `snap --version` is answered here, without loading oclif: importing it alone takes about 0.12 s here, most of the
// time the command took, and the answer needs nothing from it. The line has oclif's own format.
import { readFileSync } from 'node:fs'

const args = process.argv.slice(2)
if (args.length === 1 && args[0] === '--version') {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  process.stdout.write(`${pkg.name}/${pkg.version} ${process.platform}-${process.arch} node-${process.version}\n`)
} else {
  const { execute } = await import('@oclif/core')
  await execute({ dir: import.meta.url })
}
