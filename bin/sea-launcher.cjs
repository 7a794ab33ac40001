// The entry point of the standalone executable (`npm run build:binary`): one file, Node.js inside, for hosts with no
// Node and no checkout. The program (bin/, dist/, manifests/, the production node_modules) travels in the executable
// as one asset; on first run it is unpacked into a private, root-owned directory named by its own sha256, and every
// later run starts from there at once. Then bin/run.js runs as it does from a checkout, on the Node inside.
//
// CommonJS, and built-in modules only: it runs before anything else of snap exists on disk.
'use strict'

const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const sea = require('node:sea')
const url = require('node:url')
const vm = require('node:vm')
const zlib = require('node:zlib')

// The name it was run by (a link named snap speaks as snap); execPath is the file itself, links resolved.
const name = path.basename(process.argv0 || '') === 'snap' ? 'snap' : 'procsnap'

function fail(message, hint) {
  process.stderr.write(`${name}: error: ${message}${hint ? `; ${hint}` : ''}\n`)
  process.exit(6)
}

/** Where this build's program is unpacked: root's under /var/lib, anyone else's under their own cache. */
function homeOf(id) {
  const uid = process.getuid ? process.getuid() : 0
  const base = uid === 0 ? '/var/lib/procsnap/app' : path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'procsnap', 'app')
  return { dir: path.join(base, id), base, uid }
}

/** A directory snap may run code from: a real directory, ours, writable by nobody else. */
function trusted(dir, uid) {
  const st = fs.lstatSync(dir)
  return st.isDirectory() && st.uid === uid && (st.mode & 0o022) === 0
}

/**
 * The payload: gzip of [u32 LE index length][index JSON: [path, mode, size][]][file bytes, back to back]. Paths are
 * relative and checked: nothing lands outside the directory being filled.
 */
function unpack(payload, into) {
  const raw = zlib.gunzipSync(payload)
  const indexLength = raw.readUInt32LE(0)
  const index = JSON.parse(raw.subarray(4, 4 + indexLength).toString('utf8'))
  let at = 4 + indexLength
  for (const [rel, mode, size] of index) {
    const target = path.resolve(into, rel)
    if (!target.startsWith(into + path.sep)) throw new Error(`payload path ${rel} leaves its directory`)
    fs.mkdirSync(path.dirname(target), { recursive: true, mode: 0o755 })
    fs.writeFileSync(target, raw.subarray(at, at + size), { mode: mode & 0o755, flag: 'wx' })
    at += size
  }
  if (at !== raw.length) throw new Error('payload length does not match its index')
}

/**
 * Each build unpacks once; a new one removes what older builds left: copies not started from in a day (a snap of an
 * older build still at work keeps its own), and half-unpacked ones whose process is gone.
 */
function removeOldCopies(base, id) {
  const dayAgo = Date.now() - 24 * 3600 * 1000
  for (const entry of fs.readdirSync(base)) {
    const full = path.join(base, entry)
    try {
      const tmp = /^[0-9a-f]{24}\.tmp-(\d+)$/.exec(entry)
      if (tmp && !fs.existsSync(`/proc/${tmp[1]}`)) fs.rmSync(full, { recursive: true, force: true })
      else if (/^[0-9a-f]{24}$/.test(entry) && entry !== id && fs.statSync(path.join(full, '.complete')).atimeMs < dayAgo)
        fs.rmSync(full, { recursive: true, force: true })
    } catch {
      // another run removed it, or it is not ours to judge: left alone
    }
  }
}

function ensureUnpacked() {
  const payload = Buffer.from(sea.getAsset('app'))
  const id = crypto.createHash('sha256').update(payload).digest('hex').slice(0, 24)
  const { dir, base, uid } = homeOf(id)
  if (fs.existsSync(path.join(dir, '.complete'))) {
    if (!trusted(dir, uid)) fail(`${dir} is not a private directory of this user`, 'remove it; the next run unpacks the program again')
    // Marks this copy as in use (relatime may not), so a newer build leaves it alone for a day.
    const now = new Date()
    try {
      fs.utimesSync(path.join(dir, '.complete'), now, fs.statSync(path.join(dir, '.complete')).mtime)
    } catch {
      // read-only: then it is simply older
    }
    return dir
  }
  fs.mkdirSync(base, { recursive: true, mode: 0o755 })
  if (!trusted(base, uid)) fail(`${base} is not a private directory of this user`, 'fix its owner and mode (no group or world write)')
  const tmp = `${dir}.tmp-${process.pid}`
  fs.rmSync(tmp, { recursive: true, force: true })
  fs.mkdirSync(tmp, { mode: 0o755 })
  try {
    unpack(payload, tmp)
    fs.writeFileSync(path.join(tmp, '.complete'), `${id}\n`)
    fs.renameSync(tmp, dir)
    removeOldCopies(base, id)
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true })
    // Another run unpacked the same build at the same time: use its copy.
    if (!fs.existsSync(path.join(dir, '.complete'))) fail(`cannot unpack the program into ${dir}: ${e.message}`, 'check that the filesystem has room and is writable')
  }
  return dir
}

const dir = ensureUnpacked()
// bin/run.js reads its name from here, as it does from bin/snap; its arguments start at argv[2], as under node.
process.env.PROCSNAP_INVOKED_AS = name
// A single executable's argv is [execPath, the path it was run by, ...arguments].
process.argv = [process.execPath, path.join(dir, 'bin', 'run.js'), ...process.argv.slice(2)]
// import() needs the main context's module loader, which a script in a single executable does not get by default.
// Asking for it prints an ExperimentalWarning on every run: that one warning is not the user's business.
const emitWarning = process.emitWarning
process.emitWarning = function (warning, ...rest) {
  if (String(warning && warning.message ? warning.message : warning).includes('USE_MAIN_CONTEXT_DEFAULT_LOADER')) return
  return emitWarning.call(process, warning, ...rest)
}
const entry = url.pathToFileURL(path.join(dir, 'bin', 'run.js')).href
new vm.Script(`import(${JSON.stringify(entry)})`, { importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER })
  .runInThisContext()
  .catch((e) => fail(`cannot start: ${e && e.message}`))
