// The dump's hash of the executable, on files alone: a program is hashed as sha256 does; a 1 TiB sparse file is given
// up at the hash's own limit or its share of --timeout, recorded by its size with the reason; a cancel signal ends it;
// a FIFO is never waited on.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { OperationBudget } from '../../src/pipelines/budget.js';
import { hashExecutable } from '../../src/process/describe.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';

afterAll(removeTempDirs);

const budget = (cancel = new AbortController().signal, timeoutSec?: number) => new OperationBudget(cancel, timeoutSec, 'the dump');

function sparseTiB(): string {
  const big = join(makeTempDir('snap-exe-hash-'), 'exe');
  execFileSync('truncate', ['-s', '1T', big]);
  return big;
}

describe('hashExecutable', () => {
  it('hashes a program as sha256 does, with its size and nothing said', async () => {
    const r = await hashExecutable('/bin/true', '/bin/true', budget());
    expect(r).toEqual({ sha256: createHash('sha256').update(readFileSync('/bin/true')).digest('hex'), size: statSync('/bin/true').size });
  });

  it('a 1 TiB sparse file past the hash\'s own limit: no sha256, its size, and what was read and why', async () => {
    const big = sparseTiB();
    const r = await hashExecutable(big, big, budget(), 300);
    expect(r.sha256).toBeNull();
    expect(r.size).toBe(1024 ** 4);
    expect(r.notHashed).toMatch(new RegExp(`^executable ${big} \\(1\\.0 TiB\\) was not hashed: .* of it read in the 0\\.3 s given to hashing \\(the most a dump spends hashing\\)`));
  });

  it('with --timeout 2: given up at a quarter of what is left of it', async () => {
    const big = sparseTiB();
    const r = await hashExecutable(big, big, budget(undefined, 2));
    expect(r.sha256).toBeNull();
    expect(r.notHashed).toMatch(/given to hashing \(a quarter of what was left of --timeout\)/);
  });

  it('a cancel signal while it reads: InterruptedError naming the hash', async () => {
    const big = sparseTiB();
    const cancel = new AbortController();
    setTimeout(() => cancel.abort('SIGTERM'), 200);
    await expect(hashExecutable(big, big, budget(cancel.signal))).rejects.toThrow(new RegExp(`interrupted by SIGTERM during hashing the executable ${big}`));
  });

  it('a FIFO: not waited on, said not to be a regular file', async () => {
    const fifo = join(makeTempDir('snap-exe-hash-'), 'fifo');
    execFileSync('mkfifo', [fifo]);
    const r = await hashExecutable(fifo, fifo, budget());
    expect(r).toMatchObject({ sha256: null, size: null });
    expect(r.notHashed).toBe(`executable ${fifo} was not hashed: it is not a regular file`);
  });
});
