// A tool's --version answer remembered per binary and boot: asked once, asked again when the file changes, never
// remembered when it failed, and not believed from a file others could have written.
import { appendFileSync, chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VERSION_REMEMBERED_MS, VERSIONS_FILE, versionAnswer } from '../../src/tools/tool-versions.js';

const base = mkdtempSync(join(tmpdir(), 'snap-tool-versions-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

/** A tool that counts the times it is run in `runs`, answering `answer` with `status`. */
function tool(name: string, answer: string, status = 0): { path: string; runs: () => number } {
  const dir = join(base, name);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'tool');
  const counter = join(dir, 'runs');
  writeFileSync(path, `#!/bin/sh\necho x >> '${counter}'\necho '${answer}'\nexit ${status}\n`, { mode: 0o755 });
  return { path, runs: () => (existsSync(counter) ? readFileSync(counter, 'utf8').split('\n').filter(Boolean).length : 0) };
}

describe('versionAnswer', () => {
  it('asks once, then answers from the cache; asks again once the binary changed', async () => {
    const cache = join(base, 'cache-1');
    const t = tool('one', 'Version: 4.2.1');
    expect(await versionAnswer(t.path, cache)).toMatchObject({ ok: true, output: expect.stringContaining('Version: 4.2.1') });
    expect(await versionAnswer(t.path, cache)).toMatchObject({ ok: true, output: expect.stringContaining('Version: 4.2.1') });
    expect(t.runs()).toBe(1);
    appendFileSync(t.path, '# changed\n');
    await versionAnswer(t.path, cache);
    expect(t.runs()).toBe(2);
  });

  it('asks every time without a cache, after a day, and when the tool failed', async () => {
    const cache = join(base, 'cache-2');
    const t = tool('two', 'Version: 4.2.1');
    await versionAnswer(t.path, null);
    await versionAnswer(t.path, null);
    expect(t.runs()).toBe(2);
    await versionAnswer(t.path, cache);
    await versionAnswer(t.path, cache, Date.now() + VERSION_REMEMBERED_MS + 1000);
    expect(t.runs()).toBe(4);
    const failing = tool('failing', 'broken', 1);
    expect((await versionAnswer(failing.path, cache)).ok).toBe(false);
    expect((await versionAnswer(failing.path, cache)).ok).toBe(false);
    expect(failing.runs()).toBe(2);
  });

  it('does not believe a cache file that others can write', async () => {
    const cache = join(base, 'cache-3');
    const t = tool('three', 'Version: 4.2.1');
    await versionAnswer(t.path, cache);
    chmodSync(join(cache, VERSIONS_FILE), 0o666);
    await versionAnswer(t.path, cache);
    expect(t.runs()).toBe(2);
  });
});
