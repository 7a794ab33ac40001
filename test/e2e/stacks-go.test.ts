// A Go service's stacks as goroutines: a net/http server built now from test/fixtures/go-server, its handler and two
// goroutines of its own each blocked in a function of its own file; the bundle's stacks name every goroutine with its
// state and frames, read from the core by delve.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, readBundleManifest, removeTempDirs, schemaProblems } from '../helpers/bundle.js';
import { markedLine } from '../helpers/fixture-lines.js';
import { runSnap } from '../helpers/cli.js';
import { repoRoot } from '../helpers/paths.js';
import { killPid, readProcStat, waitFor } from '../helpers/target.js';

const execFileAsync = promisify(execFile);

interface Frame {
  function: string | null;
  file: string | null;
  line: number | null;
}
interface Goroutine {
  id: number;
  state: string | null;
  thread: number | null;
  frames: Frame[];
}
interface Stacks {
  processes: { pid: number; runtime?: { name: string; version: string | null }; runtimeError?: string; goroutines?: Goroutine[] }[];
}

const fixture = join(repoRoot, 'test', 'fixtures', 'go-server');

/** The frame a function of the fixture blocks in: its file (as the build recorded it: the compiler may keep it
 *  relative to the module's root) and the line marked "NAME blocks here". */
function blockingFrame(file: string, fn: string): { function: string; file: unknown; line: number } {
  const line = markedLine(join(fixture, file), fn);
  return { function: `main.${fn}`, file: expect.stringMatching(new RegExp(`(^|/)test/fixtures/go-server/${file.replace('.', '\\.')}$`)), line };
}

let dir: string;
let server: ChildProcess;
let bundle: string;

beforeAll(async () => {
  dir = makeTempDir('snap-stacks-go-');
  const exe = join(dir, 'go-server');
  // Built here, into a cache of its own: the stdlib only, nothing fetched.
  await execFileAsync('go', ['build', '-o', exe, 'main.go', 'ledger.go', 'outbox.go'], {
    cwd: fixture,
    timeout: 180_000,
    env: { ...process.env, GOCACHE: join(dir, 'gocache'), GOPATH: join(dir, 'gopath'), GOFLAGS: '-mod=mod', GOTOOLCHAIN: 'local', GOPROXY: 'off' },
  });
  const ready = join(dir, 'ready');
  server = spawn(exe, [ready], { detached: true, stdio: 'ignore' });
  await waitFor(() => existsSync(ready), { what: 'the go server to hold a request', timeoutMs: 15_000 });
  bundle = join(dir, 'go.snap.tar.zst');
  const dump = await runSnap(['dump', String(server.pid), '-o', bundle], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
  expect(dump.exitCode, dump.stderr).toBe(0);
  expect(dump.stderr).not.toMatch(/no go frames/);
}, 240_000);
afterAll(async () => {
  if (server?.pid) await killPid(server.pid);
  removeTempDirs();
});

describe('Go stacks', () => {
  it('every goroutine with its state; the handler and the two goroutines in their own functions, file and line', async () => {
    expect(readProcStat(server.pid!)?.state).toMatch(/^[SR]$/);
    const manifest = await readBundleManifest(bundle);
    expect(schemaProblems(manifest)).toEqual([]);
    expect(manifest.processes?.[0]?.runtime).toMatchObject({ name: 'go', version: expect.stringMatching(/^go1\.\d+/) });
    const r = await runSnap(['stacks', bundle, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const p = (JSON.parse(r.stdout) as Stacks).processes[0]!;
    expect(p.runtimeError).toBeUndefined();
    const goroutines = p.goroutines ?? [];
    // main, the handler, the two of the fixture's own, the accept loop, the client, and the runtime's own.
    expect(goroutines.length).toBeGreaterThanOrEqual(6);
    const blockedIn = (fn: string) => goroutines.find((g) => g.frames.some((f) => f.function === `main.${fn}`));
    const cases: [string, string, RegExp][] = [
      ['main.go', 'holdRequest', /^select \(no cases\)$/],
      ['ledger.go', 'settleLedger', /^chan receive$/],
      ['outbox.go', 'drainOutbox', /^(semacquire|sync\.Mutex\.Lock)$/],
    ];
    for (const [file, fn, state] of cases) {
      const g = blockedIn(fn);
      expect(g, `a goroutine in ${fn}`).toBeDefined();
      expect(g!.state).toMatch(state);
      expect(g!.frames.find((f) => f.function === `main.${fn}`)).toEqual(blockingFrame(file, fn));
    }
    // The handler's goroutine was started by net/http for the request it holds.
    expect(blockedIn('holdRequest')!.frames.map((f) => f.function)).toContain('net/http.(*conn).serve');
    expect(goroutines.find((g) => g.id === 1)!.frames.map((f) => f.function)).toContain('main.main');

    const text = await runSnap(['stacks', bundle]);
    expect(text.stdout).toMatch(/^ {2}runtime go go1\.\d+/m);
    const hold = blockingFrame('main.go', 'holdRequest');
    expect(text.stdout).toMatch(new RegExp(`^ {2}goroutine \\d+ \\[select \\(no cases\\)\\]:\\n(?: {4}go #\\d+ .*\\n)*? {4}go #\\d+ {2}main\\.holdRequest at \\S*go-server/main\\.go:${hold.line}$`, 'm'));
  });
});
