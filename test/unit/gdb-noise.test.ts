// procsnap debug passes gdb's stderr through, without the lines that say nothing about the capture.
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { gdbNoiseFilter, isGdbNoise } from '../../src/tools/gdb-noise.js';

async function filtered(chunks: string[]): Promise<string> {
  return text(Readable.from(chunks.map((c) => Buffer.from(c))).pipe(gdbNoiseFilter()));
}

describe("gdb's noise", () => {
  it('names the mapped-file, missing-source and declined auto-load lines, and nothing gdb says about the capture', () => {
    expect(isGdbNoise("warning: Can't open file /usr/lib/locale/C.utf8/LC_TIME during file-backed mapping note processing")).toBe(true);
    expect(isGdbNoise('warning: 71\t../sysdeps/unix/sysv/linux/clock_nanosleep.c: No such file or directory')).toBe(true);
    expect(isGdbNoise('warning: File "/usr/share/gdb/auto-load/lib/x86_64-linux-gnu/libc.so.6-gdb.py" auto-loading has been declined by your `auto-load safe-path\' set to "$debugdir:$datadir/auto-load".')).toBe(true);
    expect(isGdbNoise('\tadd-auto-load-safe-path /usr/share/gdb/auto-load/lib/x86_64-linux-gnu/libc.so.6-gdb.py')).toBe(true);
    expect(isGdbNoise("warning: the executable is newer than the core file")).toBe(false);
    expect(isGdbNoise('No symbol "snap_ticks" in current context.')).toBe(false);
    expect(isGdbNoise('warning: Unable to find libthread_db matching inferior\'s thread library, thread debugging will not be available.')).toBe(false);
  });

  it('drops each noisy line with the blank line before it, keeps the rest in order, across chunk boundaries', async () => {
    const gdb = [
      "\nwarning: Can't open file /usr/lib/locale/C.utf8/LC_NU",
      "MERIC during file-backed mapping note processing\n",
      '\nwarning: File "/x-gdb.py" auto-loading has been declined by your `auto-load safe-path\' set to "$debugdir".\n',
      'To enable execution of this file add\n\tadd-auto-load-safe-path /x-gdb.py\nline to your configuration file "/root/.config/gdb/gdbinit".\n',
      'To completely disable this security protection add\n\tset auto-load safe-path /\nline to your configuration file "/root/.config/gdb/gdbinit".\n',
      'For more information about this security protection see the\n"Auto-loading safe path" section in the GDB manual.  E.g., run from the shell:\n\tinfo "(gdb)Auto-loading safe path"\n',
      '\nwarning: core file may not match specified executable file.\n',
      'No symbol "x" in current context.\n',
      '\nwarning: 71\t../sysdeps/unix/sysv/linux/clock_nanosleep.c: No such file or directory\n',
      'partial line without newline',
    ];
    expect(await filtered(gdb)).toBe('\nwarning: core file may not match specified executable file.\nNo symbol "x" in current context.\npartial line without newline');
  });
});
