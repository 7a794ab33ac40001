// Encrypted bundles end to end: `dump --encrypt-to` writes an age file whose every byte past the header is
// ciphertext, from the first byte written (the output directory is watched during the dump); Debian's `age` decrypts
// it, and snap reads what `age -r` encrypted; inspect, verify, stacks and restore read it with --identity, and refuse
// it without one or with the wrong one (exit 11, naming the recipients). The default recipients list is held to the
// trusted keys' rule.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, readdirSync, readFileSync, statSync, writeFileSync, openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeSafeDir, makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap, startSnap, type SnapResult } from '../helpers/cli.js';
import { cleanupAllTargets, killPid, readProcStat, startTarget, waitFor } from '../helpers/target.js';

const AGE_MAGIC = 'age-encryption.org/v1\n';
const hasAge = spawnSync('age', ['--version']).status === 0 && spawnSync('age-keygen', ['--version']).status === 0;

let journalDir: string;
let dir: string;
let keys: string;
const pids: number[] = [];

function snap(args: string[], env: Record<string, string> = {}): Promise<SnapResult> {
  return runSnap(args, { env: { PROCSNAP_JOURNAL_DIR: journalDir, ...env } });
}

/** A new age identity file; returns its path and public key. */
function newIdentity(name: string): { file: string; recipient: string } {
  const file = join(keys, name);
  execFileSync('age-keygen', ['-o', file], { stdio: 'ignore' });
  return { file, recipient: execFileSync('age-keygen', ['-y', file], { encoding: 'utf8' }).trim() };
}

function head(path: string, n: number): Buffer {
  const buf = Buffer.alloc(n);
  const fd = openSync(path, 'r');
  try {
    return buf.subarray(0, readSync(fd, buf, 0, n, 0));
  } finally {
    closeSync(fd);
  }
}

beforeAll(() => {
  journalDir = makeTempDir('snap-encrypt-journal-');
  dir = makeTempDir('snap-encrypt-out-');
  keys = makeSafeDir('snap-encrypt-keys-');
});
afterAll(async () => {
  for (const pid of pids) await killPid(pid);
  await cleanupAllTargets();
  removeTempDirs();
});

describe.skipIf(!hasAge)('encrypted bundles (age)', () => {
  let alice: { file: string; recipient: string };
  let bob: { file: string; recipient: string };
  let mallory: { file: string; recipient: string };
  let bundle: string;
  let targetPid: number;

  beforeAll(async () => {
    alice = newIdentity('alice.txt');
    bob = newIdentity('bob.txt');
    mallory = newIdentity('mallory.txt');
    const list = join(keys, 'analysts');
    writeFileSync(list, `# the analysts on call\n${bob.recipient}\n`, { mode: 0o600 });
    const target = await startTarget({ threads: 2, mib: 16, group: 'setsid' });
    targetPid = target.pid;
    bundle = join(dir, 'enc.tar.zst');

    // Every file that appears directly in the output directory during the dump (the bundle under its temporary name,
    // then its own) is looked at as it grows: from its first bytes it is an age file, never a tar or zstd stream.
    const seen = new Map<string, Buffer>();
    const run = startSnap(['dump', String(target.pid), '-o', bundle, '--encrypt-to', alice.recipient, '--encrypt-to', list, '--json', '--quiet'], {
      env: { PROCSNAP_JOURNAL_DIR: journalDir },
    });
    let finished = false;
    void run.result.then(() => (finished = true));
    while (!finished) {
      for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        try {
          if (!statSync(path).isFile()) continue;
          const h = head(path, 64);
          if (h.length >= AGE_MAGIC.length) seen.set(name, h);
        } catch {
          // renamed or removed meanwhile
        }
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    const dump = await run.result;
    expect(dump.exitCode, dump.stderr).toBe(0);
    const result = JSON.parse(dump.stdout) as { encryption: { format: string; recipients: string[]; from: string } };
    expect(result.encryption).toEqual({ format: 'age', recipients: [alice.recipient, bob.recipient], from: '--encrypt-to' });
    expect(seen.size, 'the bundle was seen while it was written').toBeGreaterThan(0);
    for (const [name, h] of seen) expect(h.subarray(0, AGE_MAGIC.length).toString('latin1'), name).toBe(AGE_MAGIC);
  });

  it('holds no byte of its manifest or of any entry name in the clear, and names its recipients in its header', () => {
    const bytes = readFileSync(bundle);
    expect(bytes.subarray(0, AGE_MAGIC.length).toString('latin1')).toBe(AGE_MAGIC);
    for (const clear of ['manifest.json', 'criu/', 'pstree.img', 'core-recipe', 'stacks.json', '"format"', 'ustar'])
      expect(bytes.includes(Buffer.from(clear)), clear).toBe(false);
    expect(bytes.includes(Buffer.from(`procsnap.recipient ${alice.recipient}`))).toBe(true);
    expect(bytes.includes(Buffer.from(`procsnap.recipient ${bob.recipient}`))).toBe(true);
  });

  it("Debian's age decrypts it with either recipient's identity, into a bundle snap verifies as it is", async () => {
    for (const id of [alice, bob]) {
      const plain = join(dir, `plain-${id === alice ? 'alice' : 'bob'}.tar.zst`);
      execFileSync('age', ['-d', '-i', id.file, '-o', plain, bundle]);
      expect(head(plain, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])), 'a zstd stream').toBe(true);
      const verify = await snap(['verify', plain, '--json']);
      expect(verify.exitCode, verify.stderr).toBe(0);
    }
    const wrong = spawnSync('age', ['-d', '-i', mallory.file, '-o', join(dir, 'nope'), bundle]);
    expect(wrong.status).not.toBe(0);
  });

  it('inspect, verify, grep and stacks read it with --identity', async () => {
    const inspect = await snap(['inspect', bundle, '--identity', bob.file, '--json']);
    expect(inspect.exitCode, inspect.stderr).toBe(0);
    const result = JSON.parse(inspect.stdout) as { bundle: { compression: string; encryption: { format: string; recipients: string[] } }; manifest: { target: { pid: number } } };
    expect(result.manifest.target.pid).toBe(targetPid);
    expect(result.bundle.compression).toBe('zstd');
    expect(result.bundle.encryption.format).toBe('age');
    expect(result.bundle.encryption.recipients.sort()).toEqual([alice.recipient, bob.recipient].sort());

    const verify = await snap(['verify', bundle, '--identity', alice.file, '--json']);
    expect(verify.exitCode, verify.stderr).toBe(0);
    expect((JSON.parse(verify.stdout) as { ok: boolean; artifacts: number }).ok).toBe(true);

    // --identity takes one file each time: the pattern after it is the pattern.
    const grep = await snap(['grep', bundle, '--identity', alice.file, 'progress']);
    expect(grep.exitCode, grep.stderr).toBe(0);
    expect(grep.stdout).toContain('progress');

    const stacks = await snap(['stacks', bundle, '--identity', alice.file]);
    expect(stacks.exitCode, stacks.stderr).toBe(0);
    expect(stacks.stdout).toContain(`process ${targetPid}`);
  });

  it('without an identity, or with one that is no recipient\'s, every reader exits 11 naming the recipients', async () => {
    for (const cmd of ['inspect', 'verify', 'stacks']) {
      for (const extra of [[], ['--identity', mallory.file]]) {
        const run = await snap([cmd, bundle, ...extra]);
        expect(run.exitCode, `${cmd} ${extra.join(' ')}: ${run.stderr}`).toBe(11);
        expect(run.stderr).toContain('is encrypted (age) for 2 X25519 recipients');
        expect(run.stderr).toContain(alice.recipient);
        expect(run.stderr).toContain(bob.recipient);
        expect(run.stderr).toContain('--identity');
        expect(run.stdout).not.toContain('"format"');
      }
    }
  });

  it('a bundle that `age -r` encrypted is read like one snap encrypted', async () => {
    const plain = join(dir, 'plain-alice.tar.zst');
    const byAge = join(dir, 'by-age.tar.zst.age');
    execFileSync('age', ['-r', mallory.recipient, '-o', byAge, plain]);
    const verify = await snap(['verify', byAge, '--identity', mallory.file, '--json']);
    expect(verify.exitCode, verify.stderr).toBe(0);
    // age names no recipient: what can be said is how many there are.
    const none = await snap(['inspect', byAge]);
    expect(none.exitCode).toBe(11);
    expect(none.stderr).toContain('is encrypted (age) for 1 X25519 recipient;');
  });

  it('a changed byte of ciphertext is found: verify exits 11', async () => {
    const bytes = readFileSync(bundle);
    bytes[bytes.length - 100] = bytes.at(-100)! ^ 0x01;
    const damaged = join(dir, 'damaged.tar.zst');
    writeFileSync(damaged, bytes, { mode: 0o600 });
    const verify = await snap(['verify', damaged, '--identity', alice.file]);
    expect(verify.exitCode, verify.stderr).toBe(11);
    expect(verify.stderr).toMatch(/does not decrypt/);
  });

  it('restore with --identity puts the process back from the encrypted bundle', async () => {
    await killPid(targetPid);
    await waitFor(() => readProcStat(targetPid) === undefined, { what: `pid ${targetPid} to be gone` });
    const refused = await snap(['restore', bundle, '--allow-unsigned', '--json']);
    expect(refused.exitCode, refused.stderr).toBe(11);
    expect(readProcStat(targetPid)).toBeUndefined();
    const restore = await snap(['restore', bundle, '--allow-unsigned', '--identity', alice.file, '--json']);
    expect(restore.exitCode, restore.stderr).toBe(0);
    const restoredPid = (JSON.parse(restore.stdout) as { pid: number }).pid;
    pids.push(restoredPid);
    expect(restoredPid).toBe(targetPid);
    expect(readProcStat(restoredPid)?.state).toMatch(/[RS]/);
  });
});

describe.skipIf(!hasAge)('the default recipients list', () => {
  it('is used when --encrypt-to is not given, and refused before any signal when others can write it', async () => {
    const carol = newIdentity('carol.txt');
    const list = join(keys, 'recipients');
    writeFileSync(list, `${carol.recipient}\n`, { mode: 0o644 });
    const target = await startTarget({ threads: 1, mib: 4, group: 'setsid' });

    chmodSync(list, 0o666);
    const refused = await snap(['dump', String(target.pid), '-o', join(dir, 'refused.tar.zst'), '--quiet'], { PROCSNAP_RECIPIENTS: list });
    expect(refused.exitCode, refused.stderr).toBe(2);
    expect(refused.stderr).toContain(`the default recipients list ${list} is not trusted`);
    expect(refused.stderr).toContain('writable by others');
    expect(readProcStat(target.pid)?.state).toMatch(/[RS]/);
    expect(readdirSync(dir)).not.toContain('refused.tar.zst');

    chmodSync(list, 0o644);
    const out = join(dir, 'default.tar.zst');
    const dump = await snap(['dump', String(target.pid), '-o', out, '--quiet'], { PROCSNAP_RECIPIENTS: list });
    expect(dump.exitCode, dump.stderr).toBe(0);
    expect(head(out, AGE_MAGIC.length).toString('latin1')).toBe(AGE_MAGIC);
    const inspect = await snap(['inspect', out, '--identity', carol.file, '--json']);
    expect(inspect.exitCode, inspect.stderr).toBe(0);
    await target.cleanup();
  });

  it('without -o, an encrypted bundle is named for what it is (.tar.zst.age), and list finds it', async () => {
    const erin = newIdentity('erin.txt');
    const target = await startTarget({ threads: 1, mib: 4, group: 'setsid' });
    const here = makeSafeDir('snap-encrypt-named-');
    const dump = await runSnap(['dump', String(target.pid), '--encrypt-to', erin.recipient, '--quiet', '--json'], { cwd: here, env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(dump.exitCode, dump.stderr).toBe(0);
    const name = readdirSync(here).find((n) => n.startsWith('snap-'));
    expect(name).toMatch(new RegExp(`^snap-worker-${target.pid}-\\d{8}T\\d{6}Z\\.tar\\.zst\\.age$`));
    expect(head(join(here, name!), AGE_MAGIC.length).toString('latin1')).toBe(AGE_MAGIC);
    const list = await snap(['list', here, '--identity', erin.file, '--json']);
    expect(list.exitCode, list.stderr).toBe(0);
    expect(list.stdout).toContain(name!);
    await target.cleanup();
  });

  it('a recipient that is not an age X25519 public key is refused before any signal (exit 2)', async () => {
    const target = await startTarget({ threads: 1, mib: 4, group: 'setsid' });
    const run = await snap(['dump', String(target.pid), '-o', join(dir, 'bad.tar.zst'), '--encrypt-to', 'age1notakey', '--quiet']);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toContain("'age1notakey' is not an age X25519 recipient");
    expect(readProcStat(target.pid)?.state).toMatch(/[RS]/);
    await target.cleanup();
  });
});
