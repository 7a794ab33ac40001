// `npm run build:binary`: build/procsnap, one executable that needs no Node.js on the host (Node's single executable
// application). The program and its production dependencies are packed into one asset that bin/sea-launcher.cjs
// unpacks on first run. Run after `npm run setup` (the build and the man pages must exist).
import { execFileSync } from 'node:child_process'
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { gzipSync } from 'node:zlib'

const root = new URL('..', import.meta.url).pathname.replace(/\/$/, '')
const work = join(root, 'build', 'binary-work')
const app = join(work, 'app')
const out = join(root, 'build', 'procsnap')
const node = join(root, 'node_modules', 'node', 'bin', 'node')
const log = (m) => process.stderr.write(`build:binary: ${m}\n`)

for (const need of ['dist/commands', 'oclif.manifest.json', 'dist/man/procsnap.1']) if (!existsSync(join(root, need))) throw new Error(`${need} is missing: run npm run setup first`)

rmSync(work, { recursive: true, force: true })
mkdirSync(app, { recursive: true })
for (const p of ['package.json', 'package-lock.json', 'oclif.manifest.json', 'bin', 'dist', 'manifests']) cpSync(join(root, p), join(app, p), { recursive: true })
rmSync(join(app, 'bin', 'sea-launcher.cjs'))
// The production dependencies only, exactly as locked.
log('npm ci --omit=dev')
execFileSync('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: app, stdio: ['ignore', 'ignore', 'inherit'] })
rmSync(join(app, 'node_modules', '.bin'), { recursive: true, force: true })

// The payload: [u32 index length][index JSON][file bytes], gzipped (see bin/sea-launcher.cjs).
const files = []
const walk = (dir) => {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) walk(p)
    else if (e.isFile()) files.push(p)
    // symlinks: none needed once node_modules/.bin is gone
  }
}
walk(app)
files.sort()
const index = files.map((f) => [relative(app, f), statSync(f).mode & 0o777, statSync(f).size])
const indexBytes = Buffer.from(JSON.stringify(index))
const head = Buffer.alloc(4)
head.writeUInt32LE(indexBytes.length)
const payload = gzipSync(Buffer.concat([head, indexBytes, ...files.map((f) => readFileSync(f))]), { level: 9 })
writeFileSync(join(work, 'app.bin'), payload)
log(`${files.length} files, payload ${(payload.length / 1048576).toFixed(1)} MiB`)

writeFileSync(
  join(work, 'sea-config.json'),
  JSON.stringify({ main: join(root, 'bin', 'sea-launcher.cjs'), output: join(work, 'sea.blob'), disableExperimentalSEAWarning: true, useCodeCache: false, assets: { app: join(work, 'app.bin') } }),
)
execFileSync(node, ['--experimental-sea-config', join(work, 'sea-config.json')], { stdio: ['ignore', 'ignore', 'inherit'] })
mkdirSync(dirname(out), { recursive: true })
rmSync(out, { force: true })
copyFileSync(node, `${out}.tmp`)
chmodSync(`${out}.tmp`, 0o755)
const postject = join(root, 'node_modules', '.bin', 'postject')
execFileSync(postject, [`${out}.tmp`, 'NODE_SEA_BLOB', join(work, 'sea.blob'), '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'], { stdio: ['ignore', 'ignore', 'inherit'] })
execFileSync('mv', ['-f', `${out}.tmp`, out])
rmSync(work, { recursive: true, force: true })
log(`${out}: ${(statSync(out).size / 1048576).toFixed(1)} MiB`)
