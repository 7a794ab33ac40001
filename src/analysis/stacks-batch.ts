// gdb's Python for a batch of cores of one executable: the executable is loaded once (gdb's command line), then each
// core in turn (`core-file`), its threads walked, the language's frames read when the batch has a reader, and a
// marker written last with what failed, so that snap can tell how far gdb got.
//
// Cores that map the same files at the same addresses (the workers a master forked: php-fpm's, gunicorn's, a pool's)
// share their libraries' symbols. Left to itself, gdb drops every library at each `core-file` and reads them all
// again (about 100 ms of a 110 ms core for a python worker here). So, from the batch's first core (or the first
// whose layout repeats the one before), the libraries are added once at their addresses (`add-symbol-file -o BASE`,
// the vDSO from memory) and gdb's own library loading is turned off: about 10 ms a core. A layout is the file mappings
// of `info proc mappings` and the vDSO's address; library names come from what gdb said of that core. The core this
// starts on is walked both ways, and both walks (threads and language frames) must be the same, or that try ends with
// gdb's own loading; a core with another layout turns it back on, until two cores in a row share a layout again
// (once: two tries at most). Starting on the first core rather than waiting for two alike spared each gdb one loading
// of every library, 120-170 ms for a python pool. Each core read so has OUT.shared beside its stacks.

import { MAX_FRAMES } from './stacks-model.js'

export const BATCH_SCRIPT = `
import gdb, json

def snap_layout():
    maps = []
    for line in gdb.execute('info proc mappings', to_string=True).splitlines():
        p = line.split()
        if len(p) < 5 or not p[-1].startswith('/'):
            continue
        try:
            maps.append((int(p[0], 16), int(p[1], 16), int(p[3], 16), p[-1]))
        except ValueError:
            continue
    vdso = None
    for line in gdb.execute('info auxv', to_string=True).splitlines():
        if 'AT_SYSINFO_EHDR' in line:
            vdso = line.split()[-1]
    return (tuple(maps), vdso)

snap_libraries = None

def snap_library(pc):
    if snap_libraries is None:
        return gdb.solib_name(pc)
    for start, end, name in snap_libraries:
        if start <= pc < end:
            return name
    return None

def snap_native_walk(path):
    out = []
    for th in sorted(gdb.selected_inferior().threads(), key=lambda t: t.num):
        th.switch()
        frames = []
        f = gdb.newest_frame()
        while f is not None and len(frames) < ${MAX_FRAMES}:
            sal = f.find_sal()
            frames.append({
                'pc': hex(f.pc()),
                'function': f.name(),
                'file': sal.symtab.filename if sal.symtab else None,
                'line': sal.line or None,
                'library': snap_library(f.pc()),
            })
            try:
                f = f.older()
            except gdb.error:
                break
        out.append({'tid': th.ptid[1], 'frames': frames})
    with open(path, 'w') as fh:
        json.dump(out, fh)

def snap_walk(item):
    snap_native_walk(item['out'])
    if item.get('pyOut'):
        snap_py_walk_to(item['pyOut'])

def snap_read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except (OSError, TypeError):
        return None

def snap_own_loading():
    global snap_libraries
    snap_libraries = None
    globals()['snap_py_keep'] = False
    gdb.execute('symbol-file', to_string=True)
    gdb.execute('file ' + SNAP_EXE, to_string=True)
    gdb.execute('set auto-solib-add on', to_string=True)

def snap_share(item, layout):
    global snap_libraries
    maps, vdso = layout
    # The libraries gdb loaded for this core, each by the file mapped where its text is, and that file's base.
    names = []
    libraries = set()
    for line in gdb.execute('info sharedlibrary', to_string=True).splitlines():
        p = line.split()
        if len(p) >= 3 and p[0].startswith('0x') and p[1].startswith('0x'):
            text = int(p[0], 16)
            for start, end, offset, path in maps:
                if start <= text < end:
                    names.append((start, end, p[-1]))
                    libraries.add(path)
                    break
    bases = {}
    for start, end, offset, path in maps:
        if offset == 0 and path in libraries and path != SNAP_EXE and path not in bases:
            bases[path] = start
    before = (snap_read(item['out']), snap_read(item.get('pyOut')))
    try:
        gdb.execute('set auto-solib-add off', to_string=True)
        gdb.execute('core-file ' + item['core'], to_string=True)
        for path, base in bases.items():
            gdb.execute('add-symbol-file %s -o 0x%x' % (path, base), to_string=True)
        if vdso:
            gdb.execute('add-symbol-file-from-memory ' + vdso, to_string=True)
        snap_libraries = names
        # The language's reader finds its types anew in the libraries added now, and keeps them for the next cores.
        globals()['snap_py_keep'] = True
        globals()['snap_py_sourced'] = False
        snap_walk(item)
        if (snap_read(item['out']), snap_read(item.get('pyOut'))) == before:
            return True
    except Exception:
        pass
    snap_own_loading()
    gdb.execute('core-file ' + item['core'], to_string=True)
    snap_walk(item)
    return False

with open(SNAP_BATCH) as fh:
    snap_batch = json.load(fh)
shared = None
previous = None
# Two tries at most: on the first core, and on the first core whose layout repeats the one before. A master whose
# mappings differ from its workers' (they load more after the fork) ends the first at the first worker; the workers
# still share from the second of them.
tried_first = False
tried = False
for item in snap_batch:
    err = ''
    try:
        print('snap: core of ' + str(item['pid']))
        gdb.execute('core-file ' + item['core'])
        layout = snap_layout() if SNAP_SHARE and SNAP_EXE else None
        if shared is not None and layout != shared:
            shared = None
            snap_own_loading()
            gdb.execute('core-file ' + item['core'], to_string=True)
        snap_walk(item)
        attempt = False
        if shared is None and layout is not None:
            if previous is None and not tried_first:
                tried_first = attempt = True
            elif layout == previous and not tried:
                tried = attempt = True
        if attempt and snap_share(item, layout):
            shared = layout
        previous = layout
        if shared is not None:
            open(item['out'] + '.shared', 'w').close()
    except Exception as e:
        err = (type(e).__name__ + ': ' + str(e))[:4000]
    with open(item['done'], 'w') as fh:
        fh.write(err)
`
