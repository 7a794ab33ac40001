// Bundles are input from elsewhere: hostile archives are refused by `snap verify` and `snap restore` with exit 11
// and the offending entry named, nothing lands outside the restore work directory, and the work directory is gone
// afterwards. Signatures catch another key and any changed manifest byte; secrets stay out of what people read.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { extractBundle, listBundle, makeTempDir, readExtractedManifest, removeTempDirs } from '../helpers/bundle.js';
import {
  artifactRecord, craftedManifest, decompressBundle, manifestEntry, readRawTar, repackBundle, writeCraftedBundle, type TarEntry,
} from '../helpers/bundles.js';
import { runSnap, startSnap, type SnapResult } from '../helpers/cli.js';
import { cleanupAllTargets, killPid, processExists, startTarget, waitFor } from '../helpers/target.js';

let journalDir: string;
beforeAll(() => {
  journalDir = makeTempDir('snap-test-journal-');
});
afterAll(removeTempDirs);

function snap(args: string[], cwd?: string): Promise<SnapResult> {
  return runSnap(args, { env: { PROCSNAP_JOURNAL_DIR: journalDir }, cwd });
}

/** The documented exit code and exactly one line on stderr, `snap: error: ...`, naming every needle; no stack. */
function expectRefused(run: SnapResult, exitCode: number, ...needles: string[]): void {
  expect(run.exitCode, `stdout:\n${run.stdout}\nstderr:\n${run.stderr}`).toBe(exitCode);
  // Progress lines (timestamped) may come first; besides them, one line: the error.
  const lines = run.stderr.split('\n').filter((l) => l.length > 0 && !/^\d{4}-\d\d-\d\dT\S+ /.test(l));
  expect(lines, run.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^snap: error: /);
  expect(run.stderr).not.toMatch(/^\s+at /m);
  for (const needle of needles) expect(lines[0]).toContain(needle);
}

/** Every path under `root`, relative, directories marked with a trailing '/'. */
function listTree(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      const isDir = lstatSync(path).isDirectory();
      out.push(relative(root, path) + (isDir ? '/' : ''));
      if (isDir) walk(path);
    }
  };
  walk(root);
  return out.sort();
}

describe('hostile archives are refused and nothing is written outside the work directory', () => {
  const payload = Buffer.from('written by a hostile bundle\n');
  const declared = Buffer.alloc(64, 0x41); // the one artifact the crafted manifests declare: criu/pages-1.img
  const absoluteTarget = `/tmp/snap-test-evil-${process.pid}-${randomBytes(4).toString('hex')}`;

  interface Layout {
    /** Everything the test made: the bundle, the --work-dir, the decoy directory the links point at. */
    root: string;
    work: string;
    decoy: string;
    decoyFile: string;
  }

  interface HostileCase {
    what: string;
    /** The entry snap must name. */
    entry: string;
    entries: (l: Layout) => TarEntry[];
  }

  const one = craftedManifest([artifactRecord('criu/pages-1.img', declared)]);
  const cases: HostileCase[] = [
    {
      what: "an entry named '../escape'",
      entry: '../escape',
      entries: () => [manifestEntry(one), { name: '../escape', data: payload }],
    },
    {
      what: 'an entry with an absolute path',
      entry: absoluteTarget,
      entries: () => [manifestEntry(one), { name: absoluteTarget, data: payload }],
    },
    {
      what: 'a symlink criu/link to a directory outside, then a file criu/link/passwd through it',
      entry: 'criu/link',
      entries: (l) => [
        manifestEntry(craftedManifest([artifactRecord('criu/link/passwd', payload)])),
        { name: 'criu/link', type: 'symlink', linkname: l.decoy },
        { name: 'criu/link/passwd', data: payload },
      ],
    },
    {
      what: 'a hard link to a file outside',
      entry: 'criu/pages-1.img',
      entries: (l) => [manifestEntry(one), { name: 'criu/pages-1.img', type: 'hardlink', linkname: l.decoyFile }],
    },
    {
      what: 'a character device entry',
      entry: 'criu/pages-1.img',
      entries: () => [manifestEntry(one), { name: 'criu/pages-1.img', type: 'chardev', device: { major: 1, minor: 3 } }],
    },
    {
      what: 'a FIFO entry',
      entry: 'criu/pages-1.img',
      entries: () => [manifestEntry(one), { name: 'criu/pages-1.img', type: 'fifo' }],
    },
    {
      what: 'the same entry twice',
      entry: 'criu/pages-1.img',
      entries: () => [manifestEntry(one), { name: 'criu/pages-1.img', data: declared }, { name: 'criu/pages-1.img', data: declared }],
    },
    {
      what: 'an entry larger than the manifest declares',
      entry: 'criu/pages-1.img',
      entries: () => [manifestEntry(one), { name: 'criu/pages-1.img', data: Buffer.alloc(1 << 20, 0x41) }],
    },
    {
      what: 'a small manifest declaring 1 artifact with 10,000 entries behind it',
      entry: 'criu/extra-00001.img',
      entries: () => {
        const small = { name: 'manifest.json', data: Buffer.from(JSON.stringify(one)) };
        expect(small.data.length).toBeLessThan(2048);
        const flood: TarEntry[] = [];
        for (let i = 1; i <= 10_000; i++) flood.push({ name: `criu/extra-${String(i).padStart(5, '0')}.img`, data: payload });
        return [small, { name: 'criu/pages-1.img', data: declared }, ...flood];
      },
    },
  ];

  afterEach(() => {
    rmSync(absoluteTarget, { recursive: true, force: true });
  });

  for (const c of cases) {
    it(`${c.what}: verify and restore exit 11 naming '${c.entry}', nothing written outside, work dir removed`, async () => {
      const root = makeTempDir('snap-test-hostile-');
      const layout: Layout = { root, work: join(root, 'work'), decoy: join(root, 'decoy'), decoyFile: join(root, 'decoy', 'passwd') };
      mkdirSync(layout.work, { mode: 0o700 });
      mkdirSync(layout.decoy, { mode: 0o700 });
      writeFileSync(layout.decoyFile, 'root:x:0:0:decoy:/root:/bin/sh\n');
      const decoyBefore = readFileSync(layout.decoyFile);
      const bundle = writeCraftedBundle(join(root, 'hostile.tar.zst'), c.entries(layout));
      const before = listTree(root);

      // Run from inside the work dir, so a relative escape from the cwd would land in `root` as well.
      const verify = await snap(['verify', bundle], layout.work);
      expectRefused(verify, 11, `'${c.entry}'`);
      // --allow-unsigned: what is tested here is the structure check, which must hold even for a trusted bundle.
      const restore = await snap(['restore', bundle, '--work-dir', layout.work, '--allow-unsigned', '--quiet'], layout.work);
      expectRefused(restore, 11, `'${c.entry}'`);
      expect(restore.stderr).not.toContain('[start] Restore the tree with criu restore');

      // Nothing new anywhere under root (no escape, no link, no device), the decoy intact, the work dir empty again.
      expect(listTree(root)).toEqual(before);
      expect(readdirSync(layout.work)).toEqual([]);
      expect(readFileSync(layout.decoyFile).equals(decoyBefore)).toBe(true);
      expect(statSync(layout.decoyFile).nlink).toBe(1);
      expect(existsSync(absoluteTarget)).toBe(false);
      expect(existsSync(join(root, 'escape'))).toBe(false);
    });
  }

  it('the crafted manifest itself is valid: an honest crafted bundle verifies', async () => {
    // Proof that the refusals above are about the hostile entry, not about the crafted manifest.
    const root = makeTempDir('snap-test-hostile-');
    const bundle = writeCraftedBundle(join(root, 'honest.tar.zst'), [manifestEntry(one), { name: 'criu/pages-1.img', data: declared }]);
    const verify = await snap(['verify', bundle]);
    expect(verify.exitCode, verify.stderr).toBe(0);
    expect(verify.stdout).toContain('1 artifacts');
  });
});

describe('signed bundles', () => {
  let dir: string;
  let key: string;
  let otherKey: string;
  let bundle: string;
  let keygen: SnapResult;

  beforeAll(async () => {
    dir = makeTempDir('snap-test-sign-');
    key = join(dir, 'team.key');
    otherKey = join(dir, 'other.key');
    keygen = await snap(['keygen', key]);
    await snap(['keygen', otherKey]);
    const target = await startTarget({ threads: 4, mib: 8, group: 'setsid' });
    bundle = join(dir, 'signed.tar.zst');
    const dump = await snap(['dump', String(target.pid), '-o', bundle, '--sign', key, '--json']);
    expect(dump.exitCode, dump.stderr).toBe(0);
    await target.cleanup();
  });
  afterAll(cleanupAllTargets);

  it('snap keygen makes the private key 0600 and the public key beside it', () => {
    expect(keygen.exitCode, keygen.stderr).toBe(0);
    expect(statSync(key).mode & 0o777).toBe(0o600);
    expect(statSync(`${key}.pub`).isFile()).toBe(true);
    expect(statSync(`${key}.pub`).mode & 0o077 & ~0o044).toBe(0); // readable by others at most, never writable
    expect(readFileSync(key, 'utf8')).toContain('PRIVATE KEY');
    expect(readFileSync(`${key}.pub`, 'utf8')).toContain('PUBLIC KEY');
  });

  it("snap keygen on a fresh host (the README's /etc/procsnap/team.key, no /etc/procsnap): the directory made 0700, and the output says how to trust the key", async () => {
    const etc = join(dir, 'fresh', 'etc', 'procsnap');
    const trusted = join(dir, 'fresh', 'trusted-keys');
    const run = await runSnap(['keygen', join(etc, 'team.key')], { env: { PROCSNAP_JOURNAL_DIR: journalDir, PROCSNAP_TRUSTED_KEYS: trusted } });
    expect(run.exitCode, run.stderr).toBe(0);
    expect(statSync(etc).mode & 0o777).toBe(0o700);
    expect(statSync(join(etc, 'team.key')).mode & 0o777).toBe(0o600);
    const install = run.stdout.split('\n').find((l) => l.startsWith('to trust it where bundles are restored: '));
    expect(install, run.stdout).toBe(`to trust it where bundles are restored: install -D -m 644 ${join(etc, 'team.key.pub')} ${join(trusted, 'team.key.pub')}`);
    execFileSync('sh', ['-c', install!.slice(install!.indexOf(': ') + 2)]);
    expect(readFileSync(join(trusted, 'team.key.pub'), 'utf8')).toBe(readFileSync(join(etc, 'team.key.pub'), 'utf8'));
  });

  it('snap keygen never overwrites an existing key', async () => {
    const before = readFileSync(key);
    const again = await snap(['keygen', key]);
    expectRefused(again, 2, 'already exists');
    expect(readFileSync(key).equals(before)).toBe(true);
  });

  it('snap keygen with only PATH.pub in the way writes nothing: no half key pair left behind', async () => {
    const lone = join(dir, 'lone.key');
    writeFileSync(`${lone}.pub`, '');
    const run = await snap(['keygen', lone]);
    expectRefused(run, 2, 'already exists');
    expect(existsSync(lone)).toBe(false);
    expect(readFileSync(`${lone}.pub`, 'utf8')).toBe('');
  });

  it('a signed bundle verifies with the right key: signed and verified by it', async () => {
    expect((await listBundle(bundle)).slice(0, 2)).toEqual(['manifest.json', 'manifest.sig']);
    const verify = await snap(['verify', bundle, '--key', `${key}.pub`]);
    expect(verify.exitCode, verify.stderr).toBe(0);
    expect(verify.stdout).toContain(`signed and verified by ${key}.pub (SHA256:`);
  });

  it('a signed bundle fails verification with another key (exit 11, names manifest.sig)', async () => {
    const verify = await snap(['verify', bundle, '--key', `${otherKey}.pub`]);
    expectRefused(verify, 11, 'manifest.sig');
    const json = await snap(['verify', bundle, '--key', `${otherKey}.pub`, '--json']);
    expect(json.exitCode).toBe(11);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, signature: { state: 'invalid' } });
  });

  it('one changed byte in manifest.json (an added space) breaks the signature, the hashes still match', async () => {
    const changed = await repackBundle(bundle, join(dir, 'changed.tar.zst'), (extracted) => {
      const path = join(extracted, 'manifest.json');
      const text = readFileSync(path, 'utf8');
      writeFileSync(path, text.replace('{\n', '{ \n'));
      expect(readFileSync(path, 'utf8')).not.toBe(text);
    });
    const noKey = await snap(['verify', changed]);
    expect(noKey.exitCode, 'without --key the bundle is intact: every artifact matches').toBe(0);
    const verify = await snap(['verify', changed, '--key', `${key}.pub`]);
    expectRefused(verify, 11, 'manifest.sig');
    const restore = await snap(['restore', changed, '--key', `${key}.pub`, '--quiet']);
    expectRefused(restore, 11, 'signature');
  });

  it('an unsigned bundle fails verification when a key is required', async () => {
    const unsigned = await repackBundle(bundle, join(dir, 'unsigned.tar.zst'), (extracted) => rmSync(join(extracted, 'manifest.sig')));
    expect((await listBundle(unsigned))).not.toContain('manifest.sig');
    const verify = await snap(['verify', unsigned, '--key', `${key}.pub`]);
    expectRefused(verify, 11, 'manifest.sig');
  });
});

describe('environment values stay out of what snap writes for people', () => {
  const secret = randomBytes(16).toString('hex');
  let dir: string;

  beforeAll(() => {
    dir = makeTempDir('snap-test-env-');
  });
  afterAll(cleanupAllTargets);

  it('SECRET_TOKEN is named in the manifest, and its value appears only inside core.* and criu/*.img', async () => {
    const target = await startTarget({ threads: 4, mib: 8, group: 'setsid', env: { SECRET_TOKEN: secret } });
    const bundle = join(dir, 'env.tar.zst');
    const dump = await snap(['dump', String(target.pid), '-o', bundle, '--json']);
    expect(dump.exitCode, dump.stderr).toBe(0);
    expect(dump.stdout + dump.stderr).not.toContain(secret);

    const extracted = await extractBundle(bundle);
    const manifest = readExtractedManifest(extracted);
    expect(manifest.target.envNames).toContain('SECRET_TOKEN');
    expect(manifest.target.env).toBeUndefined();

    // Walk the decompressed tar itself: headers (names) and every entry's bytes.
    const entries = readRawTar(decompressBundle(bundle));
    expect(entries.map((e) => e.name)).toEqual(['manifest.json', ...manifest.artifacts.map((a) => a.path)]);
    const holding = entries.filter((e) => e.data.includes(secret)).map((e) => e.name);
    for (const entry of entries) expect(entry.header.includes(secret), `header of ${entry.name}`).toBe(false);
    expect(holding.length, 'the secret is in the captured memory: the test would prove nothing otherwise').toBeGreaterThan(0);
    expect(holding.filter((name) => !/^core\.\d+$/.test(name) && !/^criu\/.*\.img$/.test(name))).toEqual([]);
    expect(holding).not.toContain('manifest.json');
    expect(holding.some((name) => name.startsWith('logs/'))).toBe(false);
    await target.cleanup();
  });

  it('with --include-env the manifest holds the value', async () => {
    const target = await startTarget({ threads: 4, mib: 8, group: 'setsid', env: { SECRET_TOKEN: secret } });
    const bundle = join(dir, 'env-included.tar.zst');
    const dump = await snap(['dump', String(target.pid), '-o', bundle, '--include-env', '--json']);
    expect(dump.exitCode, dump.stderr).toBe(0);
    const manifest = readExtractedManifest(await extractBundle(bundle));
    expect(manifest.target.env?.SECRET_TOKEN).toBe(secret);
    await target.cleanup();
  });
});

describe('what snap creates, and its modes', () => {
  afterAll(cleanupAllTargets);

  /** Polls `roots` until `done` settles and records the mode of every path seen under them (even briefly). */
  async function watchModes(roots: string[], done: Promise<unknown>): Promise<Map<string, number>> {
    const seen = new Map<string, number>();
    let finished = false;
    void done.finally(() => {
      finished = true;
    });
    const visit = (path: string) => {
      let st;
      try {
        st = lstatSync(path);
      } catch {
        return; // gone between readdir and lstat
      }
      if (!seen.has(path)) seen.set(path, st.mode);
      if (st.isDirectory()) {
        let names: string[] = [];
        try {
          names = readdirSync(path);
        } catch {
          return;
        }
        for (const name of names) visit(join(path, name));
      }
    };
    while (!finished) {
      for (const root of roots) visit(root);
      await new Promise((r) => setTimeout(r, 2));
    }
    for (const root of roots) visit(root);
    return seen;
  }

  it('bundle 0600, dump and restore work dirs 0700, journal dir 0700, every file private; listed with modes', async () => {
    const root = makeTempDir('snap-test-modes-');
    const out = join(root, 'out');
    const work = join(root, 'work');
    const journal = join(root, 'journal'); // does not exist yet: snap makes it
    mkdirSync(out, { mode: 0o755 });
    mkdirSync(work, { mode: 0o755 });
    const env = { PROCSNAP_JOURNAL_DIR: journal };
    const target = await startTarget({ threads: 4, mib: 8, group: 'setsid' });
    const bundle = join(out, 'modes.tar.zst');

    const dumping = startSnap(['dump', String(target.pid), '-o', bundle, '--json'], { env });
    const dumpSeen = await watchModes([out, journal], dumping.result);
    const dump = await dumping.result;
    expect(dump.exitCode, dump.stderr).toBe(0);
    await target.kill();

    const restoring = startSnap(['restore', bundle, '--work-dir', work, '--allow-unsigned', '--json'], { env });
    const restoreSeen = await watchModes([work, journal], restoring.result);
    const restore = await restoring.result;
    expect(restore.exitCode, restore.stderr).toBe(0);
    const restoredPid = (JSON.parse(restore.stdout) as { pid: number }).pid;
    await killPid(restoredPid);

    const all = new Map([...dumpSeen, ...restoreSeen]);
    all.delete(out);
    all.delete(work);
    const listing = [...all].map(([path, mode]) => `${(mode & 0o7777).toString(8).padStart(4, '0')} ${lstatSync(path, { throwIfNoEntry: false }) ? 'kept   ' : 'removed'} ${relative(root, path)}`);
    console.log(`files and directories snap created (mode, still there?, path):\n${listing.join('\n')}`);

    expect(statSync(bundle).mode & 0o777).toBe(0o600);
    expect(statSync(journal).mode & 0o777).toBe(0o700);
    const dumpWorkDirs = [...all.keys()].filter((p) => p.startsWith(join(out, '.modes.tar.zst.work-')) && relative(out, p).split('/').length === 1);
    const restoreWorkDirs = [...all.keys()].filter((p) => p.startsWith(join(work, 'snap-restore-')) && relative(work, p).split('/').length === 1);
    expect(dumpWorkDirs, 'the dump work dir was seen').toHaveLength(1);
    expect(restoreWorkDirs, 'the restore work dir was seen').toHaveLength(1);
    for (const p of [...dumpWorkDirs, ...restoreWorkDirs]) expect(all.get(p)! & 0o777, p).toBe(0o700);
    // Every directory 0700, every file 0600 or stricter: nothing readable or writable by group or others.
    for (const [path, mode] of all) expect(mode & 0o077, `${relative(root, path)} mode ${(mode & 0o777).toString(8)}`).toBe(0);
    // Only the bundle and the journal dir are left; the work dirs are gone.
    expect(readdirSync(out)).toEqual(['modes.tar.zst']);
    expect(readdirSync(work)).toEqual([]);
    expect(readdirSync(journal)).toEqual([]);
    expect(processExists(restoredPid)).toBe(false);
  });

  it('the default journal dir /run/procsnap is 0700', async () => {
    const target = await startTarget({ threads: 1, mib: 1, group: 'setsid' });
    const bundle = join(makeTempDir('snap-test-modes-'), 'j.tar.zst');
    const journalFile = `/run/procsnap/target-${target.pid}.json`;
    let journalMode: number | undefined;
    const dumping = startSnap(['dump', String(target.pid), '-o', bundle, '--json'], { env: { PROCSNAP_JOURNAL_DIR: undefined } });
    let finished = false;
    void dumping.result.finally(() => {
      finished = true;
    });
    while (!finished) {
      journalMode ??= lstatSync(journalFile, { throwIfNoEntry: false })?.mode;
      await new Promise((r) => setTimeout(r, 2));
    }
    const dump = await dumping.result;
    expect(dump.exitCode, dump.stderr).toBe(0);
    expect(statSync('/run/procsnap').mode & 0o777).toBe(0o700);
    expect(journalMode, 'the journal file was seen while the dump ran').toBeDefined();
    expect(journalMode! & 0o777).toBe(0o600);
    expect(existsSync(journalFile)).toBe(false);
    await waitFor(() => target.isAlive(), { what: 'target alive' });
    await target.cleanup();
  });
});
