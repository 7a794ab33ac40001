// Which pages of a process's mappings are present or swapped, asked of the kernel in ranges: the PAGEMAP_SCAN ioctl
// on /proc/PID/pagemap (Linux 6.7 and later) walks the page tables and answers with runs, where reading pagemap
// itself costs 8 bytes per page of address space (512 MiB for a 256 GiB reservation, most of a --core-only freeze).
// Node has no ioctl: a small python3 helper asks, as for the registers. Undefined where the kernel lacks it.

import { execa } from 'execa'
import { PYTHON } from './copy.js'
import { CoreBuildError } from './errors.js'

/** Reads "start end" ranges on stdin; prints, per range, its runs as a JSON list of [start, end], one line each; or
 *  the line "unsupported" when the kernel has no PAGEMAP_SCAN. */
const SCAN_SCRIPT = `
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
libc.ioctl.restype = ctypes.c_long
FIELDS = ("size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages", "category_inverted", "category_mask", "category_anyof_mask", "return_mask")
class ScanArg(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in FIELDS]
class Region(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]
PAGEMAP_SCAN = 0xC0606610  # _IOWR('f', 16, struct pm_scan_arg)
PRESENT_OR_SWAPPED = (1 << 3) | (1 << 4)
fd = os.open("/proc/%s/pagemap" % sys.argv[1], os.O_RDONLY)
vec = (Region * 4096)()
out = sys.stdout
for line in sys.stdin:
    start, end = map(int, line.split())
    runs = []
    at = start
    while at < end:
        arg = ScanArg(96, 0, at, end, 0, ctypes.addressof(vec), len(vec), 0, 0, 0, PRESENT_OR_SWAPPED, PRESENT_OR_SWAPPED)
        n = libc.ioctl(fd, PAGEMAP_SCAN, ctypes.byref(arg))
        if n < 0:
            e = ctypes.get_errno()
            if e in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                print("unsupported")
                sys.exit(0)
            sys.exit("PAGEMAP_SCAN %#x-%#x: %s" % (at, end, os.strerror(e)))
        for i in range(n):
            r = vec[i]
            if runs and runs[-1][1] == r.start:
                runs[-1][1] = r.end
            else:
                runs.append([r.start, r.end])
        if arg.walk_end <= at:
            break
        at = arg.walk_end
    out.write(json.dumps(runs) + "\\n")
`

/** Per range, in order, its present or swapped runs; undefined when the kernel cannot scan (then read pagemap). */
export async function scanResidentRuns(pid: number, ranges: [number, number][], o: { cancel?: AbortSignal } = {}): Promise<[number, number][][] | undefined> {
  if (ranges.length === 0) return []
  let stdout: string
  try {
    ;({ stdout } = await execa(PYTHON, ['-c', SCAN_SCRIPT, String(pid)], {
      input: ranges.map(([a, b]) => `${a} ${b}`).join('\n') + '\n',
      timeout: 60_000,
      cancelSignal: o.cancel,
    }))
  } catch (error) {
    const e = error as { code?: string; stderr?: string; message: string }
    if (e.code === 'ENOENT') return undefined // no python3: pagemap is read instead
    throw new CoreBuildError(`could not scan the pages of ${pid}: ${e.stderr?.trim().split('\n').at(-1) ?? e.message}`, { cause: error })
  }
  const lines = stdout.trim().split('\n')
  if (lines[0] === 'unsupported') return undefined
  if (lines.length !== ranges.length) throw new CoreBuildError(`the page scan of ${pid} answered ${lines.length} ranges of ${ranges.length}`)
  return lines.map((line) => JSON.parse(line) as [number, number][])
}
