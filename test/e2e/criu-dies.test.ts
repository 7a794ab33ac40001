// criu dying mid-dump, driven by strace's fault injection: the real criu is sent SIGKILL or SIGTERM at its N-th
// ptrace call, for points spread over a whole dump (test/fixtures/fake-tools, mode `killed`). Whatever the point, the
// outcome is reported as it is: a target that died is named with exit 15, never "put back"; one whose registers criu
// took and did not give back is left stopped and named with exit 15; a living one runs with every thread's signal
// mask as it was before the dump (it still exits on SIGTERM), its connection works, and no network lock of criu's is
// left on the host.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { expectNoJournal, expectNoLeftovers, expectNoOutput, expectOneErrorLine, fake, processesOfRun, REAL_CRIU as REAL_CRIU_PATH, record, startDump } from '../helpers/faults.js';
import { runSnap } from '../helpers/cli.js';
import { connect, echoes, EchoServer, lockLeftovers } from '../helpers/echo.js';
import { cleanupAllTargets, startTarget, waitFor, type Target } from '../helpers/target.js';

afterAll(removeTempDirs);
afterAll(cleanupAllTargets);

/** How many ptrace calls a whole dump of this target makes under this criu: the range the faults are spread over. */
async function ptraceCallsOfADump(target: Target, args: string[] = []): Promise<number> {
  const countFile = join(makeTempDir('snap-ptrace-count-'), 'count');
  const dump = startDump(target, { criu: fake('criu-killed'), args, env: { PROCSNAP_FAKE_COUNT: countFile } });
  const result = await dump.result;
  expect(result.exitCode, result.stderr).toBe(0);
  const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)(?:\s+\d+)?\s+ptrace$/m.exec(readFileSync(countFile, 'utf8'));
  expect(m, readFileSync(countFile, 'utf8')).not.toBeNull();
  return Number(m![1]);
}

/** `count` points from the first ptrace call to the last, evenly spread. */
function spread(calls: number, count: number): number[] {
  return [...new Set(Array.from({ length: count }, (_, i) => 1 + Math.round((i * (calls - 1)) / (count - 1))))];
}

/** One dump with criu killed at its `at`-th ptrace call; checks the story told and what is left. */
interface Outcome {
  at: number;
  exitCode: number | null;
  died: boolean;
  /** Alive, left stopped by snap: criu had a thread's registers and did not give them back. */
  leftStopped: boolean;
  /** The rollback put back something criu left in a thread (a signal mask, a breakpoint). */
  threadsPutBack: boolean;
}

/** Each thread's blocked signals (SigBlk), by tid. */
function signalMasks(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const m = /^SigBlk:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
      if (m) out[tid] = m[1]!;
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Every signal blocked (SIGKILL and SIGSTOP cannot be): the mask glibc gives a thread it creates until that thread
 *  first runs, and what its own signal handlers block while they run. Not the mask a thread of these targets runs with. */
const ALL_BLOCKED = 'fffffffffffbfeff';

/** The masks a running target keeps: read until three reads agree and no thread is still starting. */
async function steadyMasks(pid: number): Promise<Record<string, string>> {
  const reads: string[] = [];
  const masks = await waitFor(
    () => {
      const now = signalMasks(pid);
      reads.push(JSON.stringify(now));
      return reads.length >= 3 && reads.slice(-3).every((r) => r === reads.at(-1)) && !Object.values(now).includes(ALL_BLOCKED) && now;
    },
    { what: `${pid}'s signal masks to hold still`, timeoutMs: 5000, intervalMs: 10 },
  );
  return masks;
}

/** One dump with criu killed at its `at`-th ptrace call; checks the story told and what is left. */
async function dumpKilledAt(target: Target, at: number, signal: 'KILL' | 'TERM', args: string[] = []): Promise<Outcome> {
  // The targets never change their masks once started: what they are now is what they must be after.
  const masksBefore = await steadyMasks(target.pid);
  const dump = startDump(target, { criu: fake('criu-killed'), args, env: { PROCSNAP_FAKE_AT: String(at), PROCSNAP_FAKE_SIGNAL: signal } });
  const result = await dump.result;
  const died = !target.isAlive() || target.processState() === 'Z';
  const leftStopped = !died && result.exitCode === 15;
  if (died) {
    // Dead: named, exit 15, and never said to be put back.
    expect(result.exitCode, result.stderr).toBe(15);
    expectOneErrorLine(result, new RegExp(`${target.pid} \\((worker|python3)\\)`));
    expect(result.stderr).not.toMatch(new RegExp(`target ${target.pid} resumed as it was`));
  } else if (leftStopped) {
    // Alive with registers that are not its own: left stopped, named, never said to be resumed.
    expectOneErrorLine(result, new RegExp(`process ${target.pid} \\((worker|python3)\\)[^;]*its own registers are lost, so it was left stopped`));
    expect(target.threadStates().every((s) => s === 'T'), `every thread of ${target.pid} stopped`).toBe(true);
    expect(result.stderr).not.toMatch(new RegExp(`target ${target.pid} resumed as it was`));
  } else if (result.exitCode !== 0) {
    // Alive: the dump failed (8), or criu hung in its start and the deadline came (10); the target runs again.
    expect([8, 10], result.stderr).toContain(result.exitCode);
    expect(target.threadStates().some((s) => s === 'T'), `a thread of ${target.pid} left stopped`).toBe(false);
  }
  // Every thread still there blocks the signals it blocked before the dump, and none of criu's.
  if (!died) expect(leftStopped ? signalMasks(target.pid) : await steadyMasks(target.pid), `signal masks of ${target.pid}'s threads after criu was killed at ${at}`).toEqual(masksBefore);
  await expectNoLeftovers(dump);
  expectNoJournal(dump);
  if (result.exitCode !== 0) expectNoOutput(dump);
  expect(lockLeftovers(), 'criu network lock left on the host').toEqual([]);
  return { at, exitCode: result.exitCode, died, leftStopped, threadsPutBack: /what criu left in threads put back/.test(result.stderr) };
}

/** A target the rollback put something back in still exits on SIGTERM, as it did before the dump. */
async function exitsOnSigterm(pid: number, alive: () => boolean, at: number): Promise<void> {
  process.kill(pid, 'SIGTERM');
  const exited = await waitFor(() => !alive(), { what: `${pid} to exit on SIGTERM`, timeoutMs: 10_000 }).catch(() => false);
  expect(exited, `${pid} exits on SIGTERM after criu was killed at ${at} (SigBlk ${JSON.stringify(signalMasks(pid))})`).toBe(true);
}

describe('criu killed at points spread over a dump of a 4-thread worker', () => {
  for (const signal of ['KILL', 'TERM'] as const) {
    it(`SIG${signal}: each target that died is reported dead (exit 15), each living one runs on`, async () => {
      let target = await startTarget({ threads: 4, group: 'setsid' });
      const calls = await ptraceCallsOfADump(target);
      const outcomes: Outcome[] = [];
      for (const at of spread(calls, 12)) {
        if (!target.isAlive()) target = await startTarget({ threads: 4, group: 'setsid' });
        const o = await dumpKilledAt(target, at, signal);
        outcomes.push(o);
        if (o.leftStopped) await target.kill();
        else if (!o.died && o.threadsPutBack) await exitsOnSigterm(target.pid, () => target.isAlive(), at);
        else if (!o.died && o.exitCode !== 0) await target.waitUntilTicksAdvance(3);
      }
      const lived = outcomes.filter((o) => !o.died && !o.leftStopped);
      record(
        `SIG${signal} at ${outcomes.length} of ${calls} ptrace calls: ${outcomes.filter((o) => o.died).length} died (all exit 15), ` +
          `${outcomes.filter((o) => o.leftStopped).length} left stopped with criu's registers (exit 15), ${lived.length} lived ` +
          `(exits ${[...new Set(lived.map((o) => o.exitCode))].join(', ')}; ${lived.filter((o) => o.threadsPutBack).length} with a mask or breakpoint put back, each then exited on SIGTERM)`,
      );
      for (const o of outcomes) if (o.died) expect(o.exitCode).toBe(15);
    });
  }
});

describe('criu killed while it dumps a server holding an established connection', () => {
  // snap's own lock (one nftables table, criu told --network-lock skip) by default; criu's iptables lock when asked for.
  for (const lock of ['snap', 'iptables'] as const) {
    it(`network lock ${lock}: no lock rule is left, and a living server's connection works`, async () => {
      const args = lock === 'iptables' ? ['--criu-opt=--network-lock=iptables'] : [];
      let server = await EchoServer.start();
      let socket = await connect(server.port);
      const asTarget = (s: EchoServer) => ({ pid: s.pid, isAlive: () => s.alive(), processState: () => (s.alive() ? 'S' : 'Z'), threadStates: () => threadStatesOf(s.pid) }) as unknown as Target;
      try {
        expect(await echoes(socket, 'before\n')).toBe(true);
        const calls = await ptraceCallsOfADump(asTarget(server), args);
        expect(await echoes(socket, 'after a whole dump\n'), 'the connection works after a dump').toBe(true);
        let died = 0;
        let lived = 0;
        let stopped = 0;
        let putBack = 0;
        for (const at of spread(calls, 8)) {
          if (!server.alive()) {
            socket.destroy();
            server.stop();
            server = await EchoServer.start();
            socket = await connect(server.port);
          }
          const o = await dumpKilledAt(asTarget(server), at, 'KILL', args);
          if (o.died) died++;
          else if (o.leftStopped) {
            stopped++;
            server.stop();
            const pid = server.pid;
            await waitFor(() => !server.alive(), { what: `${pid} to be gone after SIGKILL`, timeoutMs: 10_000 });
          } else {
            lived++;
            expect(await echoes(socket, `after criu was killed at ${at}\n`), `connection after criu was killed at ptrace call ${at}`).toBe(true);
            if (o.threadsPutBack) {
              putBack++;
              await exitsOnSigterm(server.pid, () => server.alive(), at);
            }
          }
        }
        record(
          `${lock}: criu killed at 8 of ${calls} ptrace calls: ${died} server(s) died (exit 15), ${stopped} left stopped with criu's registers (exit 15), ` +
            `${lived} lived with the connection working (${putBack} with a mask or breakpoint put back, each then exited on SIGTERM); no lock left`,
        );
      } finally {
        socket.destroy();
        server.stop();
      }
    });
  }
});

describe('snap killed (SIGKILL) while criu dumps a server holding an established connection', () => {
  it("its network lock stays on the host until `snap recover`, which removes it and resumes the server: the connection works", async () => {
    const server = await EchoServer.start();
    const socket = await connect(server.port);
    const asTarget = { pid: server.pid } as unknown as Target;
    try {
      expect(await echoes(socket, 'before\n')).toBe(true);
      const dump = startDump(asTarget, { criu: REAL_CRIU_PATH });
      // The lock is set once the tree is stopped, just before criu's gate opens.
      const mine = () => snapTables().filter((t) => t.includes(`procsnap-${dump.pid}-`));
      await waitFor(() => mine().length > 0, { what: "this snap's lock table", timeoutMs: 30_000, intervalMs: 2 });
      dump.signal('SIGKILL');
      const result = await dump.result;
      expect(result.signal).toBe('SIGKILL');
      // criu is not killed with snap: it finishes, and the lock snap set is still there, the server still stopped.
      await waitFor(() => !processesOfRun(dump.token).some((l) => /criu/.test(l)), { what: 'criu to finish', timeoutMs: 60_000 });
      expect(mine()).toHaveLength(1);
      const recovered = await runSnap(['recover', '--json'], { env: { PROCSNAP_JOURNAL_DIR: dump.journalDir ?? undefined } });
      expect(recovered.exitCode, recovered.stderr).toBe(0);
      expect(recovered.stdout).toMatch(/removed the network lock: nftables table inet procsnap-/);
      expect(mine()).toEqual([]);
      expect(lockLeftovers()).toEqual([]);
      expect(threadStatesOf(server.pid).some((st) => st === 'T')).toBe(false);
      expect(await echoes(socket, 'after recover\n'), 'the connection after recover').toBe(true);
    } finally {
      socket.destroy();
      server.stop();
    }
  });
});

describe('snap killed, then criu killed while it holds the server: `snap recover` undoes what criu left in its thread', () => {
  it('a server recover resumes blocks the signals it blocked before, serves its connection and exits on SIGTERM; one whose registers criu kept is left stopped (exit 15)', async () => {
    let server = await EchoServer.start();
    let socket = await connect(server.port);
    const asTarget = (s: EchoServer) => ({ pid: s.pid, isAlive: () => s.alive(), processState: () => (s.alive() ? 'S' : 'Z'), threadStates: () => threadStatesOf(s.pid) }) as unknown as Target;
    try {
      const calls = await ptraceCallsOfADump(asTarget(server));
      const outcomes: string[] = [];
      // The second and third of the points the dump tests use: criu's code is running inside the server there.
      for (const at of spread(calls, 8).slice(2, 4)) {
        if (!server.alive()) {
          socket.destroy();
          server = await EchoServer.start();
          socket = await connect(server.port);
        }
        const masksBefore = await steadyMasks(server.pid);
        // criu waits a second before it starts: snap is killed in it, with the tree stopped and its journal written.
        const dump = startDump(asTarget(server), { criu: fake('criu-killed'), env: { PROCSNAP_FAKE_AT: String(at), PROCSNAP_FAKE_DELAY: '1' } });
        await dump.waitForMarker('criu to start');
        dump.signal('SIGKILL');
        expect((await dump.result).signal).toBe('SIGKILL');
        await waitFor(() => !processesOfRun(dump.token).some((l) => /criu|strace/.test(l)), { what: `criu to be killed at its ptrace call ${at}`, timeoutMs: 60_000 });
        const recovered = await runSnap(['recover', '--json'], { env: { PROCSNAP_JOURNAL_DIR: dump.journalDir ?? undefined } });
        expect(lockLeftovers(), 'criu network lock left on the host').toEqual([]);
        if (/its own registers are lost, so it is left stopped/.test(recovered.stdout)) {
          expect(recovered.exitCode, recovered.stdout).toBe(15);
          expect(threadStatesOf(server.pid).every((st) => st === 'T'), `${server.pid} left stopped`).toBe(true);
          outcomes.push(`${at}: left stopped, criu kept its registers (exit 15)`);
          const pid = server.pid;
          server.stop();
          await waitFor(() => !server.alive(), { what: `${pid} to be gone after SIGKILL`, timeoutMs: 10_000 });
          continue;
        }
        expect(recovered.exitCode, `${recovered.stdout}\n${recovered.stderr}`).toBe(0);
        expect(threadStatesOf(server.pid).some((st) => st === 'T'), `a thread of ${server.pid} left stopped`).toBe(false);
        expect(await steadyMasks(server.pid), `signal masks after recover (criu killed at ${at})`).toEqual(masksBefore);
        expect(await echoes(socket, `after recover (criu killed at ${at})\n`), 'the connection after recover').toBe(true);
        const putBack = /put back what criu left in threads/.test(recovered.stdout);
        if (putBack) await exitsOnSigterm(server.pid, () => server.alive(), at);
        outcomes.push(`${at}: running${putBack ? ', a mask or breakpoint put back, then exited on SIGTERM' : ''}`);
      }
      record(`snap and criu killed, then recover (${calls} ptrace calls): ${outcomes.join('; ')}`);
    } finally {
      socket.destroy();
      server.stop();
    }
  });
});

function snapTables(): string[] {
  try {
    return execFileSync('nft', ['list', 'tables', 'inet'], { encoding: 'utf8' }).split('\n').filter((l) => /procsnap-/.test(l));
  } catch {
    return [];
  }
}

function threadStatesOf(pid: number): string[] {
  try {
    return execFileSync('sh', ['-c', `cat /proc/${pid}/task/*/stat`], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map((l) => l.slice(l.lastIndexOf(')') + 2).split(' ')[0]!);
  } catch {
    return [];
  }
}
