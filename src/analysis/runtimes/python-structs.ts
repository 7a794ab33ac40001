// CPython's frames read from the interpreter's structs, for the cores of a batch that share their libraries (see
// stacks-batch.ts): each struct read in one piece, with offsets taken once from the interpreter's debug info, instead
// of field by field through CPython's gdb extension, whose objects look their types up again for each value. The
// walker (python.ts) checks this reading against the extension's on the first such core and keeps the extension's on
// any difference. CPython 3.11's frames only: 3.12's shim frames and 3.13's instruction pointer are the extension's.

/** gdb's Python: the state and helpers the walker uses to read frames and strs from structs, and a gdb.lookup_type
 *  that keeps what it found while the libraries are kept. Frames past `maxFrames` are a loop in a corrupt chain. */
export function pythonStructReader(maxFrames: number): string {
  return `
# For cores that share their libraries (snap_py_keep): the frames read with whole structs at a time and the
# interpreter's offsets, instead of gdb's values field by field through the extension's objects (about 25 of a python
# worker's 35 ms here). Checked against the extension's own reading on the first such core; on any difference the
# extension reads them all. None until checked.
snap_py_fast = None
snap_py_layout = None
snap_py_raw_used = False
# The str objects seen as dict keys holding a name, by name: forked workers share them, and the one looked at first
# spares reading the length of every key of sys.modules. Always checked by reading the key itself.
snap_py_keys = {}
snap_py_strs = {}
# A str's hash not yet computed (-1): its address, length and hash do not tell it from another.
SNAP_NO_HASH = (-1).to_bytes(8, 'little', signed=True)
def snap_py_offsets():
    def offset(t, name):
        for f in t.fields():
            if f.name == name:
                return f.bitpos // 8
        raise KeyError(t.name + '.' + name)
    frame = gdb.lookup_type('_PyInterpreterFrame')
    code = gdb.lookup_type('PyCodeObject')
    text = gdb.lookup_type('PyASCIIObject')
    data = gdb.lookup_type('PyBytesObject')
    return {
        'f_code': offset(frame, 'f_code'), 'previous': offset(frame, 'previous'),
        'prev_instr': offset(frame, 'prev_instr'), 'frame': frame.sizeof,
        'co_name': offset(code, 'co_name'), 'co_filename': offset(code, 'co_filename'),
        'co_linetable': offset(code, 'co_linetable'), 'co_firstlineno': offset(code, 'co_firstlineno'),
        'co_code': offset(code, 'co_code_adaptive'),
        'length': offset(text, 'length'), 'hash': offset(text, 'hash'), 'str': text.sizeof,
        'ob_size': offset(data, 'ob_size') if any(f.name == 'ob_size' for f in data.fields()) else offset(gdb.lookup_type('PyVarObject'), 'ob_size'),
        'ob_sval': offset(data, 'ob_sval'),
        'unit': gdb.lookup_type('_Py_CODEUNIT').sizeof,
        'object': gdb.lookup_type('PyObject').pointer(),
    }
def snap_py_raw(addr, n):
    return gdb.selected_inferior().read_memory(addr, n).tobytes()
def snap_py_word(b, at):
    return int.from_bytes(b[at:at + 8], 'little')
def snap_py_signed(b, at, n):
    return int.from_bytes(b[at:at + n], 'little', signed=True)
def snap_py_line(table, first, lasti):
    # CPython 3.11's location table (Objects/locations.md): entries of code units, each with a line delta.
    if lasti < 0:
        return first
    L = snap_py_layout
    size = snap_py_signed(snap_py_raw(table + L['ob_size'], 8), 0, 8)
    if size < 0 or size > (1 << 22):
        raise ValueError('a location table of %d bytes' % size)
    data = snap_py_raw(table + L['ob_sval'], size) if size else b''
    at = 0
    def varint():
        nonlocal at
        b = data[at]; at += 1
        value, shift = b & 63, 0
        while b & 64:
            b = data[at]; at += 1
            shift += 6
            value |= (b & 63) << shift
        return value
    def signed():
        v = varint()
        return -(v >> 1) if v & 1 else v >> 1
    line, addr = first, 0
    while at < len(data):
        head = data[at]; at += 1
        code, end = (head >> 3) & 15, addr + (head & 7) + 1
        here = line
        if code == 15:
            here = None
        elif code == 14:
            line += signed(); here = line
            varint(); varint(); varint()
        elif code == 13:
            line += signed(); here = line
        elif code in (10, 11, 12):
            line += code - 10; here = line
            at += 2
        else:
            at += 1
        if addr <= lasti < end:
            return here
        addr = end
    return None
def snap_py_fast_frames(f, text):
    L = snap_py_layout
    frames = []
    while f != 0 and len(frames) < ${maxFrames}:
        fb = snap_py_raw(f, L['frame'])
        code = snap_py_word(fb, L['f_code'])
        cb = snap_py_raw(code, L['co_code'])
        line = snap_py_line(snap_py_word(cb, L['co_linetable']), snap_py_signed(cb, L['co_firstlineno'], 4),
                            (snap_py_signed(fb, L['prev_instr'], 8) - (code + L['co_code'])) // L['unit'])
        frames.append({'function': snap_py_str(snap_py_word(cb, L['co_name']), text),
                       'file': snap_py_str(snap_py_word(cb, L['co_filename']), text),
                       'line': line if isinstance(line, int) and line >= 0 else None})
        f = snap_py_word(fb, L['previous'])
    return frames
def snap_py_str(addr, text):
    # A str read once a gdb: known again by its address, length and hash (never -1 for a name the code object has
    # interned, so two strs that only share an address are told apart).
    if addr == 0:
        return None
    head = snap_py_raw(addr, snap_py_layout['str'])
    key = (addr, head[snap_py_layout['length']:snap_py_layout['length'] + 8], head[snap_py_layout['hash']:snap_py_layout['hash'] + 8])
    if key[2] != SNAP_NO_HASH and key in snap_py_strs:
        return snap_py_strs[key]
    value = text(PyObjectPtr.from_pyobject_ptr(gdb.Value(addr).cast(snap_py_layout['object'])))
    if key[2] != SNAP_NO_HASH and len(snap_py_strs) < 65536:
        snap_py_strs[key] = value
    return value
SNAP_LOOKUP_TYPE = gdb.lookup_type
snap_py_types = {}
def snap_py_lookup_type(name, block=None):
    if block is not None:
        return SNAP_LOOKUP_TYPE(name, block)
    found = snap_py_types.get(name)
    if found is None:
        found = snap_py_types[name] = SNAP_LOOKUP_TYPE(name)
    return found
`
}
