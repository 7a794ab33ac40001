// What gdb says on stderr that tells the person nothing about their capture: files of the capture host that this host
// (or the bundle's binaries) lacks, and the advice that follows a declined auto-load. `procsnap debug` drops these
// lines and passes everything else through as gdb wrote it.

import { Transform, type TransformCallback } from 'node:stream'

/** gdb's options that keep it from producing the rest of such noise: no source text it cannot open, no scripts. */
export const QUIET_GDB_OPTIONS = [
  // Without the sources, each frame printed at a stop would be followed by "No such file or directory".
  '-iex', 'set source open off',
  // Scripts found beside the executable or a library: from a bundle, never to be run; declined, gdb says so at length.
  '-iex', 'set auto-load python-scripts off',
  '-iex', 'set auto-load gdb-scripts off',
  '-iex', 'set auto-load local-gdbinit off',
]

const NOISE = [
  // A mapped file (locale, gconv cache) the core's NT_FILE note names and this host does not have.
  /^warning: Can't open file .* during file-backed mapping note processing$/,
  // A source file that is not here, when `set source open off` did not apply (a user's own -ex list, say).
  /^warning: \d+\t.*: No such file or directory$/,
  // The auto-load refusal and its advice, should anything still be declined.
  /auto-loading has been declined by your `auto-load safe-path'/,
  /^To enable execution of this file add$/,
  /^\tadd-auto-load-safe-path /,
  /^line to your configuration file "/,
  /^To completely disable this security protection add$/,
  /^\tset auto-load safe-path \/$/,
  /^For more information about this security protection see the$/,
  /^"Auto-loading safe path" section in the GDB manual\.  E\.g\., run from the shell:$/,
  /^\tinfo "\(gdb\)Auto-loading safe path"$/,
]

export function isGdbNoise(line: string): boolean {
  return NOISE.some((re) => re.test(line))
}

/** gdb's stderr with the noise taken out, line by line; a dropped line takes the blank line gdb put before it. */
export function gdbNoiseFilter(): Transform {
  let pending = ''
  let blank = false
  const keep = (line: string, out: string[]) => {
    if (line === '') {
      if (blank) out.push('')
      blank = true
      return
    }
    if (isGdbNoise(line)) {
      blank = false
      return
    }
    if (blank) out.push('')
    blank = false
    out.push(line)
  }
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      const lines = (pending + chunk.toString('utf8')).split('\n')
      pending = lines.pop()!
      const out: string[] = []
      for (const l of lines) keep(l, out)
      done(null, out.length ? out.map((l) => `${l}\n`).join('') : undefined)
    },
    flush(done: TransformCallback) {
      const out: string[] = []
      if (pending) keep(pending, out)
      else if (blank) out.push('')
      done(null, out.length ? out.join('\n') + (pending ? '' : '\n') : undefined)
    },
  })
}
