// CPython's own frames of every thread, read from a core by gdb with CPython's gdb extension (Debian's
// python3.X-dbg ships it and the interpreter's debug info): the interpreter's thread states are walked from
// _PyRuntime, not the C stack, so a thread blocked in C still shows the Python line that called it; thread names
// come from the threading module's _active table. Measured on the cores snap rebuilds from the images, where py-spy
// needs file-backed read-only mappings those cores leave out.

import { existsSync, realpathSync } from 'node:fs'
import { join } from 'node:path'
import { array, int, object, string, type ObjectShape } from '../../bundle/json-stream.js'
import { buildIdOf, type RuntimeRecord } from './detect.js'
import { pythonStructReader } from './python-structs.js'

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
import gdb, json, os
snap_py_keep = False
snap_py_sourced = False
${pythonStructReader(MAX_RUNTIME_FRAMES)}
def snap_py_walk():
    # CPython's extension, sourced again for each core gdb loads anew (the types it finds belong to the libraries of
    # the core before), once for all the cores that share their libraries (snap_py_keep, see stacks-batch.ts).
    global snap_py_sourced, snap_py_fast, snap_py_layout
    if not snap_py_keep or not snap_py_sourced:
        gdb.execute('source ' + ${JSON.stringify(extension)})
        snap_py_sourced = True
        snap_py_fast = None
        snap_py_layout = None
        snap_py_strs.clear()
        # The extension looks its types up again for every object it makes (90 times a python worker's core, a third of
        # its frames' time here); while the libraries are kept, their types are too, so each is looked up once.
        snap_py_types.clear()
        gdb.lookup_type = snap_py_lookup_type if snap_py_keep else SNAP_LOOKUP_TYPE
        if snap_py_keep and not hasattr(globals()['PyFramePtr'], 'is_shim'):
            # 3.11's frames only: 3.12's shim frames and 3.13's instruction pointer are the extension's to read.
            try:
                snap_py_layout = snap_py_offsets()
            except Exception:
                snap_py_layout = None
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
    object_ptr = gdb.lookup_type('PyObject').pointer()
    def length_is(k, n):
        if ascii_ptr is None:
            return True
        try:
            return int(k._gdbval.cast(ascii_ptr)['length']) == n
        except Exception:
            return True
    def lookup(d, name):
        # A table's entries read in one piece (and a managed dict's values: a Thread's attributes), the key known from
        # an earlier core looked at first, then each key of the name's length; only the one whose text is the name is
        # made an object. libpython's iteritems makes an object of every key and value first.
        try:
            if not hasattr(d, 'field'):
                # PyKeysValuesPair: the type's shared keys, this object's values beside it.
                entries, count = g['PyDictObjectPtr']._get_entries(d.keys)
                values_at = int(d.values.address)
            elif int(d.field('ma_values')) == 0:
                entries, count = d._get_entries(d.field('ma_keys'))
                values_at = None
            else:
                raise ValueError('a split table')
            count = int(count)
            entry = entries.type.target()
            size = entry.sizeof
            where = {f.name: f.bitpos // 8 for f in entry.fields()}
            if count < 0 or count > (1 << 20) or ascii_ptr is None:
                raise ValueError('no table to read in one piece')
            table = snap_py_raw(int(entries), size * count) if count else b''
            values = snap_py_raw(values_at, 8 * count) if values_at is not None and count else None
            keys = [snap_py_word(table, i * size + where['me_key']) for i in range(count)]
            known = snap_py_keys.get(name)
            order = ([keys.index(known)] if known in keys else []) + list(range(count))
            length_at = ascii_ptr.target()['length'].bitpos // 8
            for i in order:
                key = keys[i]
                value = snap_py_word(values, 8 * i) if values is not None else snap_py_word(table, i * size + where['me_value'])
                # An entry without a value is not in the dict (a shared key this object lacks), as iteritems has it.
                if key == 0 or value == 0 or snap_py_signed(snap_py_raw(key + length_at, 8), 0, 8) != len(name):
                    continue
                if text(PyObjectPtr.from_pyobject_ptr(gdb.Value(key).cast(object_ptr))) == name:
                    snap_py_keys[name] = key
                    return PyObjectPtr.from_pyobject_ptr(gdb.Value(value).cast(object_ptr))
            return None
        except (AttributeError, KeyError, ValueError, gdb.error, gdb.MemoryError):
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
    def slow_frames(f):
        frames = []
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
        return frames
    # The first core read with the layout is read both ways, every thread: the raw reading is kept only if it gave
    # the same frames.
    checking = snap_py_layout is not None and snap_py_fast is None
    def frames_of(f):
        global snap_py_fast, snap_py_raw_used
        if snap_py_layout is None or snap_py_fast is False or int(f) == 0:
            return slow_frames(f)
        try:
            fast = snap_py_fast_frames(int(f), text)
        except Exception:
            if checking:
                snap_py_fast = False
            return slow_frames(f)
        if checking:
            slow = slow_frames(f)
            if fast != slow:
                snap_py_fast = False
            return slow
        snap_py_raw_used = True
        return fast
    threads = []
    interp = gdb.parse_and_eval('_PyRuntime')['interpreters']['head']
    seen = 0
    while int(interp) != 0 and seen < 256:
        seen += 1
        names = thread_names(interp)
        ts = interp['threads']['head']
        while int(ts) != 0 and len(threads) < ${MAX_PY_THREADS}:
            frames = frames_of(current_frame(ts))
            threads.append({'tid': int(ts['native_thread_id']), 'name': names.get(int(ts['thread_id'])), 'frames': frames})
            ts = ts['next']
        interp = interp['next']
    if checking and snap_py_fast is None:
        snap_py_fast = True
    return threads
def snap_py_walk_to(path):
    global snap_py_raw_used
    snap_py_raw_used = False
    try:
        out = {'error': None, 'threads': snap_py_walk()}
    except Exception as e:
        out = {'error': (type(e).__name__ + ': ' + str(e))[:4000], 'threads': []}
    with open(path, 'w') as fh:
        json.dump(out, fh)
    # PATH.structs: this core's frames were read from the structs (snap counts them in the stacks step's note).
    if snap_py_raw_used:
        open(path + '.structs', 'w').close()
    elif os.path.exists(path + '.structs'):
        os.remove(path + '.structs')
`
}
