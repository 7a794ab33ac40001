#!/usr/bin/env node
// Runs the built CLI (dist/). `npm run setup` builds it.
//
// `snap --version` is answered here, without loading oclif: importing it alone takes about 0.12 s here, most of the
// time the command took, and the answer needs nothing from it. The line has oclif's own format.
import { readFileSync } from 'node:fs'

// The CLI's libraries need Node.js 22: an older one fails deep inside them (`TEXT_ENCODINGS.union is not a function`,
// `command doctor not found`). Said here, in one line, before any of them loads.
const major = Number(process.versions.node.split('.')[0])
if (major < 22) {
  const name = (process.argv[1] ?? 'snap').split('/').pop() === 'run.js' ? 'snap' : (process.argv[1] ?? 'snap').split('/').pop()
  process.stderr.write(`${name}: error: Node.js ${process.versions.node} is too old (need >= 22); run \`npm run setup\` (it installs Node 24 beside the code) or put a Node >= 22 first on PATH\n`)
  process.exit(6)
}

const args = process.argv.slice(2)
if (args.length === 1 && args[0] === '--version') {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  process.stdout.write(`${pkg.name}/${pkg.version} ${process.platform}-${process.arch} node-${process.version}\n`)
} else {
  const { execute } = await import('@oclif/core')
  await execute({ dir: import.meta.url })
}
