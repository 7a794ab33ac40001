// Which language runtime a process runs, decided without a process: from the executable's name, the files a core's
// NT_FILE note names, and the head of a Go executable's .go.buildinfo section.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { detectRuntime, fileNoteOf, goVersionOfBuildInfo, goVersionOfExecutable, mappedFilesOfCore } from '../../src/analysis/runtimes/detect.js';
import { goroutinesWithin, parseGoroutines } from '../../src/analysis/runtimes/go.js';
import { parseJstack } from '../../src/analysis/runtimes/java.js';
import type { ProcessStacks } from '../../src/analysis/stacks-model.js';
import { onlyLanguage } from '../../src/analysis/stacks-render.js';
import { note, NT_PRSTATUS } from '../../src/corefile/elf.js';
import { fileNote } from '../../src/corefile/notes.js';

const LIBC = '/usr/lib/x86_64-linux-gnu/libc.so.6';
const dir = mkdtempSync(join(tmpdir(), 'snap-runtimes-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the runtime of a process', () => {
  it("Debian's python3.11 (libpython linked in): Python 3.11, from the executable's name", () => {
    expect(detectRuntime({ exe: '/usr/bin/python3.11', mappedFiles: ['/usr/bin/python3.11', LIBC] })).toEqual({ name: 'python', version: '3.11', file: '/usr/bin/python3.11' });
  });

  it('a program embedding libpython3.12: Python 3.12, from the library', () => {
    const lib = '/usr/lib/x86_64-linux-gnu/libpython3.12.so.1.0';
    expect(detectRuntime({ exe: '/usr/sbin/uwsgi', mappedFiles: [LIBC, lib, lib] })).toEqual({ name: 'python', version: '3.12', file: lib });
  });

  it("a JVM: Java, named by its home directory, from libjvm.so (whatever the launcher's name)", () => {
    const jvm = '/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so';
    expect(detectRuntime({ exe: '/usr/lib/jvm/java-17-openjdk-amd64/bin/java', mappedFiles: [LIBC, jvm] })).toEqual({ name: 'java', version: 'java-17-openjdk-amd64', file: jvm });
  });

  it("a Go executable: Go, with the version its build info holds, even one named python3.11", () => {
    expect(detectRuntime({ exe: '/srv/python3.11', mappedFiles: ['/srv/python3.11'], goVersion: 'go1.19.8' })).toEqual({ name: 'go', version: 'go1.19.8', file: '/srv/python3.11' });
    expect(detectRuntime({ exe: '/srv/old', mappedFiles: [], goVersion: '' })).toEqual({ name: 'go', version: null, file: '/srv/old' });
  });

  it('node: Node.js, from the executable or libnode', () => {
    expect(detectRuntime({ exe: '/usr/bin/node', mappedFiles: [LIBC] })?.name).toBe('node');
    expect(detectRuntime({ exe: '/usr/bin/app', mappedFiles: ['/usr/lib/x86_64-linux-gnu/libnode.so.108'] })?.name).toBe('node');
  });

  it('a C program, and a python3.11-config script run by bash: native', () => {
    expect(detectRuntime({ exe: '/usr/bin/redis-server', mappedFiles: ['/usr/bin/redis-server', LIBC] })).toBeNull();
    expect(detectRuntime({ exe: '/usr/bin/bash', mappedFiles: ['/usr/bin/bash', LIBC] })).toBeNull();
    expect(detectRuntime({ exe: null, mappedFiles: [] })).toBeNull();
  });

  it("an executable not named: the core's first mapping, as an address-ordered NT_FILE note has it", () => {
    expect(detectRuntime({ exe: null, mappedFiles: ['/usr/bin/python3.11', LIBC] })).toEqual({ name: 'python', version: '3.11', file: '/usr/bin/python3.11' });
  });

  it('a deleted interpreter is still Python, by its name before deletion', () => {
    expect(detectRuntime({ exe: '/usr/bin/python3.11 (deleted)', mappedFiles: ['/usr/bin/python3.11 (deleted)'] })).toEqual({ name: 'python', version: '3.11', file: '/usr/bin/python3.11' });
  });
});

describe("a core's mapped files", () => {
  const mappings = [
    { start: 0x400000, end: 0x401000, offset: 0, path: '/usr/bin/python3.11' },
    { start: 0x7f0000000000, end: 0x7f0000002000, offset: 8192, path: LIBC },
  ];

  it('reads the paths of the NT_FILE note among other notes', () => {
    const notes = Buffer.concat([note('CORE', NT_PRSTATUS, Buffer.alloc(336)), note('CORE', 0x46494c45, fileNote(mappings))]);
    expect(fileNoteOf(notes)).toEqual(['/usr/bin/python3.11', LIBC]);
    expect(fileNoteOf(note('CORE', NT_PRSTATUS, Buffer.alloc(336)))).toBeUndefined();
  });

  it('finds the note through the core\'s PT_NOTE program header', () => {
    const notes = note('CORE', 0x46494c45, fileNote(mappings));
    const eh = Buffer.alloc(64);
    Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(eh);
    eh.writeUInt16LE(4, 16); // ET_CORE
    eh.writeBigUInt64LE(64n, 32); // e_phoff
    eh.writeUInt16LE(56, 54);
    eh.writeUInt16LE(1, 56);
    const ph = Buffer.alloc(56);
    ph.writeUInt32LE(4, 0); // PT_NOTE
    ph.writeBigUInt64LE(120n, 8);
    ph.writeBigUInt64LE(BigInt(notes.length), 32);
    const core = join(dir, 'core.1');
    writeFileSync(core, Buffer.concat([eh, ph, notes]));
    expect(mappedFilesOfCore(core)).toEqual(['/usr/bin/python3.11', LIBC]);
    writeFileSync(join(dir, 'not-a-core'), 'hello');
    expect(() => mappedFilesOfCore(join(dir, 'not-a-core'))).toThrow(/not a 64-bit little-endian ELF core/);
  });
});

describe("Go's build info", () => {
  const head = (flags: number, version: string) => {
    const b = Buffer.alloc(32 + 1 + version.length);
    b.write('\xff Go buildinf:', 0, 'latin1');
    b[14] = 8; // pointer size
    b[15] = flags;
    b[32] = version.length;
    b.write(version, 33, 'latin1');
    return b;
  };

  it('the version inline (Go 1.18 on), none behind pointers (before), and no build info without the magic', () => {
    expect(goVersionOfBuildInfo(head(2, 'go1.19.8'))).toBe('go1.19.8');
    expect(goVersionOfBuildInfo(head(0, ''))).toBe('');
    expect(goVersionOfBuildInfo(Buffer.alloc(64))).toBeUndefined();
  });

  it('a C executable has none', () => {
    expect(goVersionOfExecutable('/bin/true')).toBeUndefined();
    expect(goVersionOfExecutable(join(dir, 'missing'))).toBeUndefined();
  });
});

describe("delve's goroutines", () => {
  const listing = [
    "Type 'help' for list of commands.",
    '  Goroutine 4 - User: /srv/main.go:19 main.holdRequest (0x61270a) [select (no cases)]',
    '\t0  0x0000000000439476 in runtime.gopark',
    '\t    at /usr/lib/go-1.19/src/runtime/proc.go:364',
    '\t1  0x000000000061270a in main.holdRequest',
    '\t    at /srv/main.go:19',
    '* Goroutine 7 - User: /srv/spin.go:3 main.spin (0x4010) (thread 4242)',
    '\t 0  0x0000000000004010 in main.spin',
    '\t     at /srv/spin.go:3',
    '\t10  0x0000000000465981 in runtime.goexit',
    '\t     at /usr/lib/go-1.19/src/runtime/asm_amd64.s:1594',
  ].join('\n');

  it('each goroutine with its state, its thread when it runs, and its frames innermost first', () => {
    const { goroutines, more } = parseGoroutines(listing);
    expect(more).toBe(0);
    expect(goroutines).toEqual([
      {
        id: 4,
        state: 'select (no cases)',
        thread: null,
        frames: [
          { function: 'runtime.gopark', file: '/usr/lib/go-1.19/src/runtime/proc.go', line: 364 },
          { function: 'main.holdRequest', file: '/srv/main.go', line: 19 },
        ],
      },
      {
        id: 7,
        state: 'running',
        thread: 4242,
        frames: [
          { function: 'main.spin', file: '/srv/spin.go', line: 3 },
          { function: 'runtime.goexit', file: '/usr/lib/go-1.19/src/runtime/asm_amd64.s', line: 1594 },
        ],
      },
    ]);
  });

  it('kept within the room stacks.json has: the first goroutines that fit', () => {
    const { goroutines } = parseGoroutines(listing);
    expect(goroutinesWithin(goroutines, 1 << 20)).toHaveLength(2);
    expect(goroutinesWithin(goroutines, 700).map((g) => g.id)).toEqual([4]);
    expect(goroutinesWithin(goroutines, 10)).toEqual([]);
  });
});

describe("jhsdb jstack's threads", () => {
  it('each Java thread by its nid, with its name, state and class.method frames with their lines', () => {
    const listing = [
      'Attaching to core core.j from executable /usr/lib/jvm/java-17-openjdk-amd64/bin/java, please wait...',
      'Deadlock Detection:',
      '',
      '"settler-1" #12 prio=5 tid=0x00007f5ac8113f00 nid=0x2c56 in Object.wait() [0x00007f5aa4c46000]',
      '   java.lang.Thread.State: WAITING (on object monitor)',
      '   JavaThread state: _thread_blocked',
      ' - java.lang.Object.wait(long) @bci=0 (Interpreted frame)',
      '\t- waiting on <0x000000069ec19730> (a java.lang.Object)',
      ' - Settler.awaitSettlement() @bci=9, line=12 (Interpreted frame)',
      ' - Settler$$Lambda$1+0x00007f5a48000a08.run() @bci=4 (Interpreted frame)',
      '',
      '"a "quoted" name" #13 daemon prio=9 tid=0x00007f5ac80fd260 nid=0x2c4d waiting on condition [0x0000000000000000]',
      '   java.lang.Thread.State: RUNNABLE',
    ].join('\n');
    expect(parseJstack(listing)).toEqual([
      {
        tid: 0x2c56,
        name: 'settler-1',
        state: 'WAITING (on object monitor)',
        frames: [
          { function: 'java.lang.Object.wait', file: null, line: null },
          { function: 'Settler.awaitSettlement', file: null, line: 12 },
          { function: 'Settler$$Lambda$1+0x00007f5a48000a08.run', file: null, line: null },
        ],
      },
      { tid: 0x2c4d, name: 'a "quoted" name', state: 'RUNNABLE', frames: [] },
    ]);
  });
});

describe('stacks of one kind (--lang)', () => {
  const native = { pc: '0x1', function: 'clock_nanosleep', file: null, line: null, library: null };
  const py: ProcessStacks = {
    pid: 10, comm: 'python3', exe: '/usr/bin/python3.11', runtime: { name: 'python', version: '3.11', file: '/usr/bin/python3.11' },
    threads: [{ tid: 10, name: 'MainThread', frames: [native], runtimeFrames: [{ function: 'serve', file: '/srv/app.py', line: 3 }] }],
  };
  const go: ProcessStacks = {
    pid: 11, comm: 'server', exe: '/srv/server', runtime: { name: 'go', version: 'go1.19.8', file: '/srv/server' },
    threads: [{ tid: 11, frames: [native] }], goroutines: [{ id: 1, state: 'IO wait', thread: null, frames: [] }],
  };
  const c: ProcessStacks = { pid: 12, comm: 'worker', exe: '/srv/worker', threads: [{ tid: 12, frames: [native] }] };

  it("a language: its processes only, with their language's frames and no native ones", () => {
    expect(onlyLanguage([py, go, c], 'python')).toEqual([{ ...py, threads: [{ ...py.threads[0], frames: [] }] }]);
    expect(onlyLanguage([py, go, c], 'go')).toEqual([{ ...go, threads: [] }]);
    expect(onlyLanguage([py, c], 'java')).toEqual([]);
  });

  it('native: every process, its native frames only', () => {
    const out = onlyLanguage([py, go, c], 'native');
    expect(out.map((p) => p.pid)).toEqual([10, 11, 12]);
    expect(out[0]!.threads[0]).toEqual({ tid: 10, name: 'MainThread', frames: [native] });
    expect(out[1]!.goroutines).toBeUndefined();
  });
});
