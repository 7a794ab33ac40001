// Writes oclif.manifest.json so that `snap --version`, `snap --help` and each command load only what they need:
// without it oclif imports every command file (and everything they import) just to list them.
import { writeFileSync } from 'node:fs'
import { Config } from '@oclif/core'

const root = new URL('..', import.meta.url).pathname
const config = await Config.load(root)
const plugin = config.getPluginsList().find((p) => p.root === config.root) ?? config.getPluginsList()[0]
const manifest = { ...plugin.manifest, version: config.version }
writeFileSync(new URL('../oclif.manifest.json', import.meta.url), JSON.stringify(manifest, null, 2) + '\n')
process.stderr.write(`setup: oclif.manifest.json lists ${Object.keys(manifest.commands).length} commands\n`)
