// `snap inspect` end to end: what it shows people and as JSON, and that it reads only the head of a bundle, so a
// bundle of a 1 GiB process is inspected as quickly as one of 8 MiB (shown by inspecting a copy cut to its first MiB).
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InspectResult } from '../../src/commands/inspect.js';
import type { Manifest } from '../../src/bundle/manifest.js';
import { makeTempDir, readBundleManifest, removeTempDirs, schemaProblems } from '../helpers/bundle.js';
import { runSnap, type SnapResult } from '../helpers/cli.js';
import { cleanupAllTargets, killPid, startTarget, waitFor } from '../helpers/target.js';

let journalDir: string;
let dir: string;
beforeAll(() => {
  journalDir = makeTempDir('snap-test-journal-');
  dir = makeTempDir('snap-test-inspect-');
});
afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

function snap(args: string[]): Promise<SnapResult> {
  return runSnap(args, { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
}

async function dumpNew(mib: number, name: string, extra: string[] = []): Promise<{ bundle: string; pid: number }> {
  const target = await startTarget({ threads: 4, mib, group: 'setsid' });
  const bundle = join(dir, name);
  const dump = await snap(['dump', String(target.pid), '-o', bundle, '--json', '--quiet', ...extra]);
  expect(dump.exitCode, dump.stderr).toBe(0);
  await target.cleanup();
  return { bundle, pid: target.pid };
}

/** A new file holding only the first `bytes` bytes of `path`. */
function headCopy(path: string, bytes: number, output: string): string {
  const head = Buffer.alloc(bytes);
  const fd = openSync(path, 'r');
  try {
    const got = readSync(fd, head, 0, bytes, 0);
    writeFileSync(output, head.subarray(0, got), { mode: 0o600 });
  } finally {
    closeSync(fd);
  }
  return output;
}

function expectInspectJson(run: SnapResult): InspectResult {
  expect(run.exitCode, run.stderr).toBe(0);
  return JSON.parse(run.stdout) as InspectResult;
}

describe('snap inspect', () => {
  let small: { bundle: string; pid: number };
  let manifest: Manifest;

  beforeAll(async () => {
    small = await dumpNew(8, 'small.tar.zst');
    manifest = await readBundleManifest(small.bundle);
  });

  it('shows pid, comm, states, steps and the freeze window to people', async () => {
    const run = await snap(['inspect', small.bundle]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toContain(`pid ${small.pid} worker (`);
    expect(run.stdout).toContain('4 threads');
    expect(run.stdout).toMatch(/state\s+found running, left running/);
    expect(run.stdout).toContain(`freeze window ${manifest.freezeWindowMs.toFixed(1)} ms`);
    const stepsLine = run.stdout.split('\n').find((l) => l.startsWith('steps'));
    expect(stepsLine).toBeDefined();
    for (const step of manifest.steps) expect(stepsLine).toContain(`${step.name} ${Math.round(step.durationMs)} ms`);
    expect(run.stdout).toContain(`core.${small.pid}`);
    expect(run.stderr).toBe('');
  });

  it('--json prints the bundle and its whole manifest, which validates against manifest-v1.schema.json', async () => {
    const result = expectInspectJson(await snap(['inspect', small.bundle, '--json']));
    expect(result.bundle).toEqual({ path: small.bundle, size: statSync(small.bundle).size, compression: 'zstd' });
    expect(schemaProblems(result.manifest)).toEqual([]);
    expect(result.manifest).toEqual(manifest);
    expect(result.manifest.target).toMatchObject({ pid: small.pid, comm: 'worker', threads: 4 });
    expect(result.manifest.originalState.state).toBe('running');
    expect(result.manifest.finalState).toBe('running');
    expect(result.manifest.steps.map((s) => s.name)).toEqual(expect.arrayContaining(['stop', 'checkpoint', 'core', 'final-state']));
    expect(result.manifest.freezeWindowMs).toBeGreaterThan(0);
  });

  it('reads only the head: a 1 GiB target\'s bundle cut to its first MiB inspects to the same manifest', async () => {
    const big = await dumpNew(1024, 'big.tar', ['--compression', 'none']);
    const bigSize = statSync(big.bundle).size;
    // The criu pages (1 GiB) once: the core built from them is kept as a recipe over them, not stored again.
    expect(bigSize).toBeGreaterThan(1024 ** 3);
    expect(bigSize).toBeLessThan(1.5 * 1024 ** 3);

    const smallRun = await snap(['inspect', small.bundle, '--json']);
    const bigRun = await snap(['inspect', big.bundle, '--json']);
    const bigResult = expectInspectJson(bigRun);
    expectInspectJson(smallRun);
    console.log(
      `inspect durations (whole CLI run, node start included): ` +
        `8 MiB target's bundle (${statSync(small.bundle).size} bytes, zstd) ${smallRun.durationMs.toFixed(0)} ms; ` +
        `1 GiB target's bundle (${bigSize} bytes, uncompressed) ${bigRun.durationMs.toFixed(0)} ms`,
    );
    expect(bigResult.manifest.target.vmRssKiB).toBeGreaterThan(1024 * 1024);
    expect(schemaProblems(bigResult.manifest)).toEqual([]);

    const cut = headCopy(big.bundle, 1 << 20, join(dir, 'big-first-MiB.tar'));
    const cutResult = expectInspectJson(await snap(['inspect', cut, '--json']));
    expect(cutResult.manifest).toEqual(bigResult.manifest);
    expect(cutResult.bundle.size).toBe(1 << 20);
    // verify, which does read everything, sees the cut.
    const verify = await snap(['verify', cut]);
    expect(verify.exitCode).toBe(11);
  });

  it('reads only the head of a zstd bundle too: the first 256 KiB are enough', async () => {
    const cut = headCopy(small.bundle, 256 << 10, join(dir, 'small-first-256KiB.tar.zst'));
    const result = expectInspectJson(await snap(['inspect', cut, '--json']));
    expect(result.manifest).toEqual(manifest);
  });
});

describe('snap inspect of a tree with a listening socket and an established connection', () => {
  it('shows the 3 processes with their states, both sockets with their addresses, namespaces and memory, from the head alone', async () => {
    // A python3 master listening on 127.0.0.1, connected to itself, and two children that hold none of its sockets.
    const ready = join(dir, 'tree-port');
    const script = [
      'import os, socket, sys, time',
      'srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(8); port = srv.getsockname()[1]',
      'cli = socket.create_connection(("127.0.0.1", port)); acc, _ = srv.accept()',
      'for _ in range(2):',
      '    if os.fork() == 0:',
      '        srv.close(); cli.close(); acc.close()',
      '        while True: time.sleep(1)',
      'open(sys.argv[1] + ".tmp", "w").write(str(port)); os.rename(sys.argv[1] + ".tmp", sys.argv[1])',
      'while True: time.sleep(1)',
    ].join('\n');
    const root = spawn('/usr/bin/python3', ['-c', script, ready], { detached: true, stdio: 'ignore' });
    try {
      const port = await waitFor(() => existsSync(ready) && Number(readFileSync(ready, 'utf8')), { what: 'the python tree to listen' });
      const bundle = join(dir, 'sockets.tar');
      const dump = await snap(['dump', String(root.pid), '-o', bundle, '--compression', 'none']);
      expect(dump.exitCode, dump.stderr).toBe(0);

      // Only the head: the bundle cut right after its first 256 KiB (the manifest is its first entry).
      const cut = headCopy(bundle, 256 << 10, join(dir, 'sockets-head.tar'));
      const run = await snap(['inspect', cut]);
      expect(run.exitCode, run.stderr).toBe(0);
      const processLines = run.stdout.split('\n').filter((l) => l.startsWith('process '));
      expect(processLines).toHaveLength(3);
      for (const l of processLines) expect(l).toMatch(/found running, left running/);
      // The root's parent as /proc had it (criu's images say 0), each child's the root; one thread each, said so.
      expect(processLines.find((l) => l.startsWith(`process       ${root.pid} `))).toContain(`(ppid ${process.pid}): 1 thread,`);
      expect(processLines.filter((l) => l.includes(`(ppid ${root.pid}): 1 thread,`))).toHaveLength(2);
      expect(run.stdout).toMatch(new RegExp(`target +pid ${root.pid} python3 \\(.*\\), 1 thread, RSS`));
      // The dump's result and its seal line give the bundle's size in the same words.
      const resultSize = /^bundle +\S+ \(([^)]+)\)$/m.exec(dump.stdout)?.[1];
      const sealSize = new RegExp(`${bundle.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(([^,]+), none\\)`).exec(dump.stderr)?.[1];
      expect(resultSize, dump.stdout).toMatch(/^\d+(\.\d)? (B|KiB|MiB)$/);
      expect(sealSize, dump.stderr).toBe(resultSize);
      expect(run.stdout).toMatch(new RegExp(`socket +fd \\d+ inet/tcp LISTEN 127\\.0\\.0\\.1:${port}\\b`));
      expect(run.stdout).toMatch(new RegExp(`socket +fd \\d+ inet/tcp ESTABLISHED 127\\.0\\.0\\.1:\\d+ -> 127\\.0\\.0\\.1:${port}\\b`));
      expect(run.stdout).toMatch(new RegExp(`socket +fd \\d+ inet/tcp ESTABLISHED 127\\.0\\.0\\.1:${port} -> 127\\.0\\.0\\.1:\\d+`));
      expect(run.stdout).toMatch(/namespaces +pid pid:\[\d+\]/);
      expect(run.stdout).toMatch(/file +fd 0 \/dev\/null/); // stdin, as the test started it
      expect(run.stdout).toMatch(/memory +\S.*resident of/);
      expect(run.stdout).toMatch(/criu option +--tcp-established: /);

      const json = expectInspectJson(await snap(['inspect', cut, '--json']));
      expect(schemaProblems(json.manifest)).toEqual([]);
      const rootRecord = json.manifest.processes!.find((p) => p.pid === root.pid)!;
      expect(rootRecord.sockets!.filter((k) => k.proto === 'inet/tcp').map((k) => k.state).sort()).toEqual(['ESTABLISHED', 'ESTABLISHED', 'LISTEN']);
      for (const child of json.manifest.processes!.filter((p) => p.pid !== root.pid)) expect(child.sockets!.filter((k) => k.proto.startsWith('inet'))).toEqual([]);
    } finally {
      const kids = readFileSync(`/proc/${root.pid}/task/${root.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
      await killPid(root.pid!);
      for (const k of kids) await killPid(k, { timeoutMs: 30_000 });
    }
  });
});

describe('snap inspect: each thread\'s credentials (manifest v4)', () => {
  // Three threads: the main one as root, one like it, and one that gave itself uid 65534 with the raw setresuid
  // syscall, which changes the calling thread alone (glibc's setresuid changes every thread).
  const SCRIPT = `
import ctypes, threading, time, sys
libc = ctypes.CDLL(None, use_errno=True)
ready = threading.Event()
def nobody():
    if libc.syscall(117, 65534, 65534, 65534) != 0:
        sys.exit(1)
    ready.tid = threading.get_native_id()
    ready.set()
    while True:
        time.sleep(1)
def alike():
    while True:
        time.sleep(1)
threading.Thread(target=alike, daemon=True).start()
threading.Thread(target=nobody, daemon=True).start()
ready.wait()
open(sys.argv[1], 'w').write(str(ready.tid))
while True:
    time.sleep(1)
`;

  it('shows the thread whose credentials differ from the main thread\'s, with each field that differs; --json has every thread\'s', async () => {
    const ready = join(dir, 'creds-ready');
    const child = spawn('/usr/bin/python3', ['-c', SCRIPT, ready], { detached: true, stdio: 'ignore' });
    const pid = child.pid!;
    child.unref();
    try {
      const tid = await waitFor(() => existsSync(ready) && Number(readFileSync(ready, 'utf8')), { what: 'a thread to become uid 65534' });
      const capEff = /^CapEff:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]!;
      const bundle = join(dir, 'creds.tar.zst');
      const dump = await snap(['dump', String(pid), '-o', bundle, '--quiet']);
      expect(dump.exitCode, dump.stderr).toBe(0);

      const human = await snap(['inspect', bundle]);
      expect(human.exitCode, human.stderr).toBe(0);
      const threadLines = human.stdout.split('\n').filter((l) => l.startsWith('  thread '));
      expect(threadLines, human.stdout).toHaveLength(1);
      expect(threadLines[0]).toMatch(new RegExp(`^  thread +${tid}: credentials differ from the main thread's \\(${pid}\\): `));
      for (const field of ['uid', 'euid', 'suid', 'fsuid']) expect(threadLines[0]).toContain(`${field} 65534 (main 0)`);
      expect(threadLines[0]).toContain(`capEff 0000000000000000 (main ${capEff})`);
      expect(threadLines[0], 'fields alike are left out').not.toMatch(/\bgid 0 \(main 0\)|capBnd/);

      const json = expectInspectJson(await snap(['inspect', bundle, '--json']));
      const [root] = json.manifest.processes!;
      expect(root!.threadCreds!.map((t) => t.tid).sort((a, b) => a - b)).toEqual(root!.tids.slice().sort((a, b) => a - b));
      expect(root!.threadCreds).toHaveLength(3);
      for (const t of root!.threadCreds!) expect(t.creds!.uid, `thread ${t.tid}`).toBe(t.tid === tid ? 65534 : 0);
    } finally {
      await killPid(pid);
    }
  });
});
