// A JVM's stacks in Java: a thread named settler-1 waiting in awaitSettlement and one named ledger-1 asleep in
// postLedger (test/fixtures/jvm-threads, compiled now); the bundle's stacks give each Java thread its name, state and
// frames as jstack prints them, read from the core by the JDK's jhsdb.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { makeTempDir, readBundleManifest, removeTempDirs, schemaProblems } from '../helpers/bundle.js';
import { markedLine } from '../helpers/fixture-lines.js';
import { repackBundle } from '../helpers/bundles.js';
import { runSnap } from '../helpers/cli.js';
import { repoRoot } from '../helpers/paths.js';
import { killPid, readProcStat, waitFor } from '../helpers/target.js';

const execFileAsync = promisify(execFile);

interface Frame {
  function: string | null;
  file: string | null;
  line: number | null;
}
interface Stacks {
  processes: {
    pid: number;
    runtime?: { name: string; version: string | null };
    runtimeError?: string;
    threads: { tid: number; name?: string | null; state?: string | null; runtimeFrames?: Frame[] }[];
  }[];
}

const source = join(repoRoot, 'test', 'fixtures', 'jvm-threads', 'Settler.java');

let dir: string;
let jvm: ChildProcess;
let bundle: string;

beforeAll(async () => {
  dir = makeTempDir('snap-stacks-java-');
  await execFileAsync('javac', ['-J-XX:-UsePerfData', '-d', dir, source], { timeout: 120_000, killSignal: 'SIGKILL' });
  const ready = join(dir, 'ready');
  jvm = spawn('java', ['-XX:-UsePerfData', '-Xmx64m', '-cp', dir, 'Settler', ready], { detached: true, stdio: 'ignore' });
  await waitFor(() => existsSync(ready), { what: 'the JVM fixture to start its threads', timeoutMs: 30_000 });
  bundle = join(dir, 'jvm.snap.tar.zst');
  const dump = await runSnap(['dump', String(jvm.pid), '-o', bundle], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
  expect(dump.exitCode, dump.stderr).toBe(0);
  expect(dump.stderr).not.toMatch(/no java frames/);
}, 240_000);
afterAll(async () => {
  if (jvm?.pid) await killPid(jvm.pid);
  removeTempDirs();
});

describe('Java stacks', () => {
  it('settler-1 in awaitSettlement and ledger-1 in postLedger: name, state, method and line; the JVM left running', async () => {
    expect(readProcStat(jvm.pid!)?.state).toMatch(/^[SR]$/);
    const manifest = await readBundleManifest(bundle);
    expect(schemaProblems(manifest)).toEqual([]);
    expect(manifest.processes?.[0]?.runtime).toMatchObject({ name: 'java', version: expect.stringMatching(/^java-\d+/) });
    const r = await runSnap(['stacks', bundle, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const p = (JSON.parse(r.stdout) as Stacks).processes[0]!;
    expect(p.runtimeError).toBeUndefined();
    const named = (name: string) => p.threads.find((t) => t.name === name);
    const settler = named('settler-1');
    expect(settler, 'a thread named settler-1').toBeDefined();
    expect(settler!.state).toMatch(/^WAITING/);
    expect(settler!.runtimeFrames).toContainEqual({ function: 'Settler.awaitSettlement', file: null, line: markedLine(source, 'awaitSettlement') });
    const ledger = named('ledger-1');
    expect(ledger!.state).toMatch(/^TIMED_WAITING/);
    expect(ledger!.runtimeFrames).toContainEqual({ function: 'Settler.postLedger', file: null, line: markedLine(source, 'postLedger') });
    expect(named('main')!.runtimeFrames!.map((f) => f.function)).toContain('Settler.main');

    const text = await runSnap(['stacks', bundle]);
    expect(text.stdout).toMatch(new RegExp(`^ {2}thread \\d+ "settler-1" \\[WAITING[^\\]]*\\]:\\n(?: {4}java #\\d+ .*\\n)*? {4}java #\\d+ {2}Settler\\.awaitSettlement line ${markedLine(source, 'awaitSettlement')}$`, 'm'));
  });

  it('a bundle with --include-binaries and no stacks: the Java threads read now from its core, the JVM\'s libraries taken from the bundle (SA_ALTROOT)', async () => {
    const carried = join(dir, 'carried.snap.tar.zst');
    const dump = await runSnap(['dump', String(jvm.pid), '-o', carried, '--include-binaries'], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
    expect(dump.exitCode, dump.stderr).toBe(0);
    const older = await repackBundle(carried, join(dir, 'carried-older.snap.tar.zst'), (x, m: Manifest) => {
      m.artifacts = m.artifacts.filter((a) => a.kind !== 'stacks');
      writeFileSync(join(x, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
    });
    const r = await runSnap(['stacks', older, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const p = (JSON.parse(r.stdout) as Stacks).processes[0]!;
    expect(p.runtimeError).toBeUndefined();
    const settler = p.threads.find((t) => t.name === 'settler-1');
    expect(settler?.runtimeFrames).toContainEqual({ function: 'Settler.awaitSettlement', file: null, line: markedLine(source, 'awaitSettlement') });
  });
});
