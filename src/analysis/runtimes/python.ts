// CPython's own frames of every thread, read from a core by gdb with CPython's gdb extension (Debian's
// python3.X-dbg ships it and the interpreter's debug info): the interpreter's thread states are walked from
// _PyRuntime, not the C stack, so a thread blocked in C still shows the Python line that called it; thread names
// come from the threading module's _active table. Measured on the cores snap rebuilds from the images, where py-spy
// needs file-backed read-only mappings those cores leave out.

import { existsSync, realpathSync } from 'node:fs'
import { join } from 'node:path'
import { array, int, object, string, type ObjectShape } from '../../bundle/json-stream.js'
import { buildIdOf, type RuntimeRecord } from './detect.js'

/** A frame of a language runtime: Python's function, file and line. */
export interface RuntimeFrame {
  function: string | null
  file: string | null
  line: number | null
}

/** The Python frames gdb reads, deeper than this is a loop in a corrupt frame chain. */
export const MAX_RUNTIME_FRAMES = 256
const MAX_PY_THREADS = 1 << 16

export const runtimeFrameShape = object({
  function: string(4096, { nullable: true }),
  file: string(4096, { nullable: true }),
  line: int(0, 2 ** 31 - 1, { nullable: true }),
})

/** What the walker below writes: each thread state's native tid, name and frames, or why it could not. */
export const pythonWalkShape: ObjectShape = object(
  {
    error: string(4096, { nullable: true }),
    threads: array(
      object({ tid: int(0, 2 ** 31 - 1), name: string(4096, { nullable: true }), frames: array(runtimeFrameShape, MAX_RUNTIME_FRAMES) }),
      MAX_PY_THREADS,
      { maxWhy: 'the thread states snap reads' },
    ),
  },
  ['error', 'threads'],
)

export interface PythonWalk {
  error: string | null
  threads: { tid: number; name: string | null; frames: RuntimeFrame[] }[]
}

/** CPython's gdb extension for this interpreter, where Debian installs it (auto-load beside gdb's data), or
 *  undefined when it is not installed. `root` is a sysroot the interpreter's files are under. */
export function pythonGdbExtension(runtime: RuntimeRecord, root = ''): string | undefined {
  let file = runtime.file
  try {
    // /usr/bin/python3 is a link to python3.11: the extension is named for the file itself.
    file = realpathSync(join(root || '/', runtime.file)).slice(root ? realpathSync(root).length : 0)
  } catch {
    // the name as mapped, then
  }
  for (const dir of [join(root || '/', 'usr/share/gdb/auto-load'), '/usr/share/gdb/auto-load']) {
    const ext = join(dir, `${file}-gdb.py`)
    if (existsSync(ext)) return ext
  }
  return undefined
}

/** What CPython's reader needs besides the files the process maps, as this host has them: the gdb extension and the
 *  interpreter's debug info (found by its build id, as gdb finds it). --include-binaries carries them. */
export function pythonReaderFiles(runtime: RuntimeRecord): string[] {
  const out: string[] = []
  const extension = pythonGdbExtension(runtime)
  if (extension) out.push(extension)
  const id = buildIdOf(runtime.file)
  const debug = id && id.length > 2 ? `/usr/lib/debug/.build-id/${id.slice(0, 2)}/${id.slice(2)}.debug` : undefined
  if (debug && existsSync(debug)) out.push(debug)
  return out
}

/** gdb's settings that find the interpreter's debug info in a sysroot (a bundle's binaries) before this host's. */
export function debugFileArgs(sysroot: string | undefined): string[] {
  return sysroot ? ['-iex', `set debug-file-directory ${join(sysroot, 'usr/lib/debug')}:/usr/lib/debug`] : []
}

/** The Debian package that ships the extension and debug info for a CPython version. */
export const pythonDebugPackage = (version: string | null) => `python${version ?? '3'}-dbg`

/**
 * gdb's Python, run after the extension is sourced (it defines PyFramePtr and PyObjectPtr in gdb's __main__): every
 * interpreter's thread states, each with its native thread id (PyThreadState.native_thread_id, 3.11 on), its frames
 * innermost first (cframe.current_frame, then previous), and the name threading._active gives its ident. Whatever
 * fails is written as the error; no exception leaves the script.
 */
export function pythonWalkerScript(extension: string, output: string): string {
  return `${pythonWalkerFunctions(extension)}\nsnap_py_walk_to(${JSON.stringify(output)})\n`
}

/** The walker as a function, snap_py_walk_to(PATH), for a gdb that reads many cores in turn: called once a core. */
export function pythonWalkerFunctions(extension: string): string {
  return `
import gdb, json
snap_py_keep = False
snap_py_sourced = False
def snap_py_walk():
    # CPython's extension, sourced again for each core gdb loads anew (the types it finds belong to the libraries of
    # the core before), once for all the cores that share their libraries (snap_py_keep, see stacks-batch.ts).
    global snap_py_sourced
    if not snap_py_keep or not snap_py_sourced:
        gdb.execute('source ' + ${JSON.stringify(extension)})
        snap_py_sourced = True
    g = globals()
    PyObjectPtr, PyFramePtr = g['PyObjectPtr'], g['PyFramePtr']
    def text(p):
        try:
            v = p.proxyval(set())
            return v if isinstance(v, str) else str(v)
        except Exception:
            return None
    # A key's length is read before its text: sys.modules holds hundreds of names, and reading each one whole
    # took most of a core's time here (85 of 110 ms for a python worker).
    try:
        ascii_ptr = gdb.lookup_type('PyASCIIObject').pointer()
    except gdb.error:
        ascii_ptr = None
    def length_is(k, n):
        if ascii_ptr is None:
            return True
        try:
            return int(k._gdbval.cast(ascii_ptr)['length']) == n
        except Exception:
            return True
    def lookup(d, name):
        # A combined table (sys.modules, a module's dict) walked entry by entry, an object made only of the key that
        # has the name's length and of its value: libpython's iteritems makes both of every entry first.
        try:
            if int(d.field('ma_values')) == 0:
                entries, count = d._get_entries(d.field('ma_keys'))
                for i in range(int(count)):
                    entry = entries[i]
                    key = entry['me_key']
                    if int(key) == 0 or (ascii_ptr is not None and int(key.cast(ascii_ptr)['length']) != len(name)):
                        continue
                    if text(PyObjectPtr.from_pyobject_ptr(key)) == name:
                        value = PyObjectPtr.from_pyobject_ptr(entry['me_value'])
                        return None if value.is_null() else value
                return None
        except (AttributeError, gdb.error):
            pass
        for k, v in d.iteritems():
            if not k.is_null() and not v.is_null() and length_is(k, len(name)) and text(k) == name:
                return v
        return None
    def thread_names(interp):
        names = {}
        try:
            try:
                mods = PyObjectPtr.from_pyobject_ptr(interp['modules'])
            except gdb.error:
                mods = PyObjectPtr.from_pyobject_ptr(interp['imports']['modules'])  # 3.12 on
            th = lookup(mods, 'threading')
            if th is None:
                return names
            md = PyObjectPtr.from_pyobject_ptr(th._gdbval.cast(gdb.lookup_type('PyModuleObject').pointer())['md_dict'])
            active = lookup(md, '_active')
            for k, v in (active.iteritems() if active is not None else []):
                attrs = v.get_keys_values() or v.get_attr_dict()
                n = lookup(attrs, '_name') if attrs is not None else None
                if n is not None:
                    names[int(k.proxyval(set()))] = text(n)
        except Exception:
            pass
        return names
    def current_frame(ts):
        # 3.11 and 3.12 keep it in the C frame record; 3.13 on in the thread state itself.
        try:
            cf = ts['cframe']
            return cf['current_frame'] if int(cf) != 0 else 0
        except gdb.error:
            return ts['current_frame']
    threads = []
    interp = gdb.parse_and_eval('_PyRuntime')['interpreters']['head']
    seen = 0
    while int(interp) != 0 and seen < 256:
        seen += 1
        names = thread_names(interp)
        ts = interp['threads']['head']
        while int(ts) != 0 and len(threads) < ${MAX_PY_THREADS}:
            frames = []
            f = current_frame(ts)
            while int(f) != 0 and len(frames) < ${MAX_RUNTIME_FRAMES}:
                p = PyFramePtr(f)
                if hasattr(p, 'is_shim') and p.is_shim():
                    pass  # 3.12 on: the C stack's entry into the interpreter, no code of its own
                elif p.is_optimized_out():
                    frames.append({'function': None, 'file': None, 'line': None})
                else:
                    line = p.current_line_num()
                    frames.append({'function': text(p.co_name), 'file': text(p.co_filename), 'line': line if isinstance(line, int) and line >= 0 else None})
                f = f['previous']
            threads.append({'tid': int(ts['native_thread_id']), 'name': names.get(int(ts['thread_id'])), 'frames': frames})
            ts = ts['next']
        interp = interp['next']
    return threads
def snap_py_walk_to(path):
    try:
        out = {'error': None, 'threads': snap_py_walk()}
    except Exception as e:
        out = {'error': (type(e).__name__ + ': ' + str(e))[:4000], 'threads': []}
    with open(path, 'w') as fh:
        json.dump(out, fh)
`
}
