// What every service test does around `snap dump`: run it on a service's master, watch that no process of the tree is
// ever left stopped, restore a bundle after the original is gone, and record the numbers the closing note reports.
import { appendFileSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import type { DumpResult } from '../../src/pipelines/dump.js';
import { makeTempDir } from '../helpers/bundle.js';
import { runSnap, type SnapResult } from '../helpers/cli.js';
import { repoRoot } from '../helpers/paths.js';
import { readThreadStates, waitFor } from '../helpers/target.js';

let journalDir: string | undefined;
let outDir: string | undefined;

function dirs(): { journalDir: string; outDir: string } {
  journalDir ??= makeTempDir('snap-svc-journal-');
  outDir ??= makeTempDir('snap-svc-out-');
  return { journalDir, outDir };
}

export function snapEnv(): Record<string, string> {
  return { PROCSNAP_JOURNAL_DIR: dirs().journalDir };
}

export async function dumpService(name: string, pid: number, extra: string[] = []): Promise<{ run: SnapResult; bundle: string; result?: DumpResult }> {
  const bundle = join(dirs().outDir, `${name}-${pid}-${Date.now()}.snap.tar.zst`);
  const run = await runSnap(['dump', String(pid), '-o', bundle, '--json', ...extra], { env: snapEnv(), timeoutMs: 300_000 });
  const result = run.exitCode === 0 ? (JSON.parse(run.stdout) as DumpResult) : undefined;
  return { run, bundle, result };
}

export function expectDumpOk(d: { run: SnapResult; result?: DumpResult }): DumpResult {
  expect(d.run.exitCode, `snap dump failed:\n${d.run.stderr}`).toBe(0);
  return d.result!;
}

/** Every thread of every pid is out of the stopped states (T: group stop, t: trace stop). */
export function expectTreeRunning(pids: number[]): void {
  for (const pid of pids) {
    const states = readThreadStates(pid);
    expect(states.length, `process ${pid} exists`).toBeGreaterThan(0);
    expect(states.filter((s) => s === 'T' || s === 't'), `process ${pid} thread states ${states.join(',')}`).toEqual([]);
  }
}

/** Samples the tree's thread states while `work` runs: a refusal before any signal means no sample ever sees T or t. */
export async function watchNeverStopped<T>(pids: number[], work: Promise<T>): Promise<{ value: T; stoppedSeen: string[] }> {
  const stoppedSeen: string[] = [];
  let done = false;
  const sampling = (async () => {
    while (!done) {
      for (const pid of pids) for (const s of readThreadStates(pid)) if (s === 'T' || s === 't') stoppedSeen.push(`${pid}:${s}`);
      await sleep(2);
    }
  })();
  try {
    return { value: await work, stoppedSeen };
  } finally {
    done = true;
    await sampling;
  }
}

/** `snap restore BUNDLE` once the original's pids are free; returns the restored root pid. */
export async function restoreBundle(bundle: string, pids: number[], extra: string[] = []): Promise<{ run: SnapResult; pid?: number }> {
  await waitFor(() => pids.every((p) => readThreadStates(p).length === 0), { what: `pids ${pids.join(',')} to be free`, timeoutMs: 15_000 });
  const run = await runSnap(['restore', bundle, '--allow-unsigned', '--json', ...extra], { env: snapEnv(), timeoutMs: 300_000 });
  const pid = run.exitCode === 0 ? (JSON.parse(run.stdout) as { pid: number }).pid : undefined;
  return { run, pid };
}

/** One line per measured capture, for the closing note: freeze window beside the longest stall the client saw. */
export function recordCapture(service: string, r: DumpResult, clientMaxStallMs: number | null, extra: Record<string, unknown> = {}): void {
  const dir = join(repoRoot, 'bench-results');
  mkdirSync(dir, { recursive: true });
  const line = {
    service,
    at: new Date().toISOString(),
    processes: r.processes.length,
    dumpMs: r.steps.reduce((n, s) => n + s.durationMs, 0),
    freezeWindowMs: r.freezeWindowMs,
    clientMaxStallMs,
    bundleBytes: statSync(r.bundle).size,
    criuOptions: r.criuOptions.map((c) => c.option),
    ...extra,
  };
  appendFileSync(join(dir, 'services.jsonl'), JSON.stringify(line) + '\n');
}
