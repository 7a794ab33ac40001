// Trust that cannot be planted. A trusted key is trusted only where no one but root could have put it: the directory,
// every directory above it and the key owned by root and writable by no one else, no symbolic link, no second hard
// link. A key that fails is ignored with a warning naming it and the fix, `snap doctor` reports it, and a restore that
// only it would have let through is refused (exit 11) naming it. And "signed" means one thing, found by checking the
// signature, never by asking the manifest: list, inspect and verify say which of four states a bundle is in.
import { execFileSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, sign } from 'node:crypto';
import { chmodSync, chownSync, linkSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { makeSafeDir, makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { artifactRecord, craftedManifest, writeCraftedBundle, type TarEntry } from '../helpers/bundles.js';
import { runSnap, type SnapResult } from '../helpers/cli.js';

let keys: string; // the key pairs, made by `snap keygen`
let bundles: string; // the crafted bundles
let work: string;
let journal: string;
const team = () => join(keys, 'team.key');
const stranger = () => join(keys, 'stranger.key');

/** SHA256:base64 of the key's SubjectPublicKeyInfo, computed here from the .pub file, as snap should print it. */
function fingerprintOf(pub: string): string {
  const der = createPublicKey(readFileSync(pub)).export({ type: 'spki', format: 'der' });
  return `SHA256:${createHash('sha256').update(der).digest('base64').replace(/=+$/, '')}`;
}

/**
 * A small crafted bundle: its manifest (the bytes signed), then manifest.sig when `sig` gives one, then one image. The
 * manifest says `signed: claim` whatever the truth: snap must never believe it.
 */
function craftBundle(name: string, claim: boolean, sig?: (manifestBytes: Buffer) => Buffer, change?: (m: Manifest) => void): string {
  const image = Buffer.alloc(64, 0x41);
  const manifest = craftedManifest([artifactRecord('criu/pages-1.img', image)]);
  manifest.signed = claim;
  change?.(manifest);
  const bytes = Buffer.from(JSON.stringify(manifest, null, 2) + '\n');
  const entries: TarEntry[] = [{ name: 'manifest.json', data: bytes }];
  if (sig) entries.push({ name: 'manifest.sig', data: sig(bytes) });
  entries.push({ name: 'criu/pages-1.img', data: image });
  return writeCraftedBundle(join(bundles, name), entries);
}

const signedBy = (key: string) => (bytes: Buffer) => sign(null, bytes, createPrivateKey(readFileSync(key)));

function snap(args: string[], trustedDir: string): Promise<SnapResult> {
  const extra = args[0] === 'restore' ? ['--work-dir', work] : [];
  return runSnap([...args, ...extra], { env: { PROCSNAP_JOURNAL_DIR: journal, PROCSNAP_TRUSTED_KEYS: trustedDir } });
}

/**
 * A tree like /etc/procsnap/trusted-keys in a private place: root/etc/procsnap/trusted-keys/team.pub, directories
 * 0755 and the key 0644, all root's: what snap must trust.
 */
function keyTree(): { root: string; parent: string; dir: string; key: string } {
  const root = makeSafeDir('snap-keys-');
  chmodSync(root, 0o755);
  const parent = join(root, 'etc', 'procsnap');
  const dir = join(parent, 'trusted-keys');
  mkdirSync(dir, { recursive: true });
  for (const d of [join(root, 'etc'), parent, dir]) chmodSync(d, 0o755);
  const key = join(dir, 'team.pub');
  writeFileSync(key, readFileSync(`${team()}.pub`));
  chmodSync(key, 0o644);
  return { root, parent, dir, key };
}

let signed: string;
let foreign: string;
let garbage: string;
let claims: string;
let signedDisclaimed: string;

beforeAll(async () => {
  keys = makeSafeDir('snap-keypairs-');
  bundles = makeTempDir('snap-key-bundles-');
  work = makeTempDir('snap-key-work-');
  journal = makeTempDir('snap-key-journal-');
  for (const k of [team(), stranger()]) expect((await runSnap(['keygen', k])).exitCode).toBe(0);
  signed = craftBundle('signed.tar.zst', true, signedBy(team()));
  foreign = craftBundle('foreign.tar.zst', true, signedBy(stranger()));
  garbage = craftBundle('garbage.tar.zst', true, () => Buffer.alloc(4000));
  claims = craftBundle('claims.tar.zst', true);
  // Signed by the team, while its manifest says it is not: the signature decides, not the claim.
  signedDisclaimed = craftBundle('disclaimed.tar.zst', false, signedBy(team()), (m) => (m.createdAt = '2020-01-01T00:00:00.000Z'));
});
afterAll(removeTempDirs);

/** The restore stops at trust: exit 11, one error line naming the key and the fix, the warning, nothing extracted. */
function expectRefusedNaming(run: SnapResult, key: string, why: RegExp, fix: RegExp): void {
  expect(run.exitCode, run.stderr).toBe(11);
  const errors = run.stderr.split('\n').filter((l) => l.startsWith('snap: error:'));
  expect(errors, run.stderr).toHaveLength(1);
  expect(errors[0]).toContain(`is signed by ${key}, but that key is not trusted`);
  expect(errors[0]).toMatch(why);
  expect(errors[0]).toMatch(fix);
  expect(run.stderr).toMatch(new RegExp(`warning: ignoring trusted key ${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
  expect(run.stderr).not.toContain('Restore the tree with criu restore');
  expect(readdirSync(work), 'nothing extracted').toEqual([]);
}

/** Not trusted anywhere: warned by verify and list, reported by doctor with its fix, refused by restore. */
async function expectPlantedRefused(dir: string, key: string, why: RegExp, fix: RegExp): Promise<void> {
  expectRefusedNaming(await snap(['restore', signed], dir), key, why, fix);

  const verify = await snap(['verify', signed], dir);
  expect(verify.exitCode, verify.stderr).toBe(0);
  expect(verify.stdout).toContain('signature present but not verified');
  expect(verify.stdout).toContain(`it is signed by ${key}, which is not trusted`);
  expect(verify.stderr).toMatch(why);

  const list = await snap(['list', bundles, '--json'], dir);
  expect(list.exitCode, list.stderr).toBe(0);
  expect(list.stderr).toContain(`warning: ignoring trusted key ${key}: `);
  const listed = (JSON.parse(list.stdout) as { bundles: { path: string; signature: { state: string } }[] }).bundles;
  expect(listed.find((b) => b.path === signed)?.signature.state).toBe('unverified');

  const doctor = await snap(['doctor', '--no-canary', '--json'], dir);
  const report = JSON.parse(doctor.stdout) as { problems: { what: string; fix: string }[]; trustedKeys: { trusted: unknown[]; ignored: { path: string }[] } };
  expect(report.trustedKeys.trusted).toEqual([]);
  expect(report.trustedKeys.ignored.map((k) => k.path)).toContain(key);
  const problem = report.problems.find((p) => p.what.startsWith(`trusted key ${key} is ignored`));
  expect(problem, doctor.stdout).toBeDefined();
  expect(problem!.what).toMatch(why);
  expect(problem!.fix).toMatch(fix);
}

describe('a trusted key is trusted only where no one else could have put it', () => {
  it('root-owned, 0644, in a 0755 directory under 0755 directories: trusted, with no warning; a restore gets past trust', async () => {
    const t = keyTree();
    const verify = await snap(['verify', signed], t.dir);
    expect(verify.exitCode, verify.stderr).toBe(0);
    expect(verify.stdout).toContain(`signed and verified by ${t.key} (${fingerprintOf(`${team()}.pub`)})`);
    expect(verify.stderr).not.toContain('warning');
    // Trust passes; the crafted images then fail the preflight, before criu.
    const restore = await snap(['restore', signed], t.dir);
    expect(restore.stderr).not.toMatch(/signature|trusted key|not signed/);
    expect(restore.stderr).toMatch(/CRIU images cannot be read/);
    const doctor = JSON.parse((await snap(['doctor', '--no-canary', '--json'], t.dir)).stdout) as { trustedKeys: { trusted: { path: string; fingerprint: string }[]; ignored: unknown[] } };
    expect(doctor.trustedKeys).toMatchObject({ trusted: [{ path: t.key, fingerprint: fingerprintOf(`${team()}.pub`) }], ignored: [] });
  });

  it('the trusted-keys directory 0777: ignored, warned, restore refused naming the key and `chmod 755`', async () => {
    const t = keyTree();
    chmodSync(t.dir, 0o777);
    await expectPlantedRefused(t.dir, t.key, new RegExp(`${t.dir} is mode 0777, writable by others`), new RegExp(`chmod 755 ${t.dir}`));
  });

  it('the key 0666: ignored, warned as the issue measured it, restore refused', async () => {
    const t = keyTree();
    chmodSync(t.key, 0o666);
    await expectPlantedRefused(t.dir, t.key, /mode 0666, writable by others/, new RegExp(`chmod 644 ${t.key}`));
    expect((await snap(['verify', signed], t.dir)).stderr).toContain(`warning: ignoring trusted key ${t.key}: mode 0666, writable by others; chmod 644 it`);
  });

  it('the key owned by another user (uid 65534): ignored, restore refused naming `chown root`', async () => {
    const t = keyTree();
    chownSync(t.key, 65534, 65534);
    await expectPlantedRefused(t.dir, t.key, /owned by uid 65534, not root/, new RegExp(`chown root ${t.key}`));
  });

  it('the trusted-keys directory a symbolic link to a 0777 directory: ignored, restore refused', async () => {
    const t = keyTree();
    const real = join(t.root, 'elsewhere');
    mkdirSync(real);
    chmodSync(real, 0o777);
    writeFileSync(join(real, 'team.pub'), readFileSync(`${team()}.pub`), { mode: 0o644 });
    const link = join(t.parent, 'linked-keys');
    symlinkSync(real, link);
    await expectPlantedRefused(link, join(link, 'team.pub'), new RegExp(`${link} is a symbolic link`), /make .* a real directory/);
  });

  it('a hard link to a 0666 key, and a hard link to a 0644 one: ignored (another name can change it), restore refused', async () => {
    const t = keyTree();
    const other = join(t.root, 'other');
    mkdirSync(other, { mode: 0o755 });
    const outside = join(other, 'team.pub');
    writeFileSync(outside, readFileSync(`${team()}.pub`));
    chmodSync(outside, 0o666);
    const linked = join(t.dir, 'linked.pub');
    linkSync(outside, linked);
    writeFileSync(t.key, ''); // the only key is the link: an empty file holds none
    await expectPlantedRefused(t.dir, linked, /mode 0666, writable by others, and 2 hard links/, /chmod 644 .* then give it a name of its own/);

    chmodSync(outside, 0o644);
    await expectPlantedRefused(t.dir, linked, /: 2 hard links, so another name can change it/, new RegExp(`cp ${linked} ${linked}.new && mv ${linked}.new ${linked}`));
  });

  it('the directory above (like /etc/procsnap) 0777, or 1777 as /tmp is: ignored, restore refused', async () => {
    const t = keyTree();
    chmodSync(t.parent, 0o777);
    await expectPlantedRefused(t.dir, t.key, new RegExp(`${t.parent} is mode 0777, writable by others`), new RegExp(`chmod 755 ${t.parent}`));
    chmodSync(t.parent, 0o1777);
    await expectPlantedRefused(t.dir, t.key, /mode 1777, writable by others \(the sticky bit/, new RegExp(`keep trusted keys out of ${t.parent}`));
  });

  it('the key a symbolic link to a good key file: ignored, restore refused', async () => {
    const t = keyTree();
    const linked = join(t.dir, 'linked.pub');
    symlinkSync(join(keys, 'team.key.pub'), linked);
    writeFileSync(t.key, '');
    await expectPlantedRefused(t.dir, linked, /a symbolic link, which can lead anywhere/, /put the key file itself in place of/);
  });

  it('a planted key beside a good one that verifies the bundle: restore goes on, still warning about the planted one', async () => {
    const t = keyTree();
    const planted = join(t.dir, 'stranger.pub');
    writeFileSync(planted, readFileSync(`${stranger()}.pub`));
    chmodSync(planted, 0o666);
    const restore = await snap(['restore', signed], t.dir);
    expect(restore.stderr).toContain(`warning: ignoring trusted key ${planted}: mode 0666, writable by others; chmod 644 it`);
    expect(restore.stderr).not.toMatch(/error: .*(signature|trusted key)/);
    // And a bundle only the planted key signed is refused, naming it.
    expectRefusedNaming(await snap(['restore', foreign], t.dir), planted, /mode 0666/, new RegExp(`chmod 644 ${planted}`));
  });
});

describe('one meaning of "signed": found by checking, never read from the manifest', () => {
  let trusted: string;
  beforeAll(() => {
    trusted = keyTree().dir;
  });

  interface Signature {
    state: 'verified' | 'unverified' | 'invalid' | 'unsigned';
    keyFile?: string;
    fingerprint?: string;
  }

  const cases = () => [
    { name: 'signed by a trusted key', bundle: signed, state: 'verified', text: `signed and verified by ${join(trusted, 'team.pub')} (${fingerprintOf(`${team()}.pub`)})` },
    { name: 'signed by a trusted key, the manifest saying unsigned', bundle: signedDisclaimed, state: 'verified', text: 'signed and verified by' },
    { name: 'signed by an unknown key', bundle: foreign, state: 'unverified', text: 'signature present but not verified' },
    { name: 'a manifest.sig of 4000 zero bytes', bundle: garbage, state: 'invalid', text: 'signature invalid' },
    { name: 'no manifest.sig, the manifest saying signed', bundle: claims, state: 'unsigned', text: 'unsigned' },
  ];

  it('list: each bundle in its one state, to people and as JSON', async () => {
    const human = await snap(['list', bundles], trusted);
    expect(human.exitCode, human.stderr).toBe(0);
    const json = await snap(['list', bundles, '--json'], trusted);
    const listed = (JSON.parse(json.stdout) as { bundles: { path: string; signature: Signature }[] }).bundles;
    for (const c of cases()) {
      const line = human.stdout.split('\n').find((l) => l.endsWith(c.bundle));
      expect(line, `${c.name}: ${human.stdout}`).toBeDefined();
      expect(line, c.name).toContain(`  ${c.text}`);
      expect(listed.find((b) => b.path === c.bundle)?.signature.state, c.name).toBe(c.state);
    }
    expect(listed.find((b) => b.path === signed)?.signature).toEqual({ state: 'verified', keyFile: join(trusted, 'team.pub'), fingerprint: fingerprintOf(`${team()}.pub`) });
    expect(human.stdout).not.toMatch(/  signed  /);
  });

  it('inspect: the same state, to people and as JSON beside the manifest', async () => {
    for (const c of cases()) {
      const human = await snap(['inspect', c.bundle], trusted);
      expect(human.exitCode, human.stderr).toBe(0);
      const line = human.stdout.split('\n').find((l) => l.startsWith('signature'));
      expect(line, c.name).toMatch(new RegExp(`^signature +${c.text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
      const json = JSON.parse((await snap(['inspect', c.bundle, '--json'], trusted)).stdout) as { signature: Signature };
      expect(json.signature.state, c.name).toBe(c.state);
    }
  });

  it('verify: the same state; an invalid signature exits 11 with or without --key, the others 0', async () => {
    for (const c of cases()) {
      const human = await snap(['verify', c.bundle], trusted);
      expect(human.exitCode, `${c.name}: ${human.stderr}`).toBe(c.state === 'invalid' ? 11 : 0);
      expect(human.stdout, c.name).toContain(c.text);
      const json = await snap(['verify', c.bundle, '--json'], trusted);
      expect((JSON.parse(json.stdout) as { signature: Signature }).signature.state, c.name).toBe(c.state);
    }
    const withKey = await snap(['verify', garbage, '--key', `${team()}.pub`, '--json'], trusted);
    expect(withKey.exitCode).toBe(11);
    expect(JSON.parse(withKey.stdout)).toMatchObject({ ok: false, signature: { state: 'invalid' } });
    // --key names the one key: a signature by another fails against it.
    const otherKey = await snap(['verify', signed, '--key', `${stranger()}.pub`], trusted);
    expect(otherKey.exitCode).toBe(11);
    expect(otherKey.stdout).toContain('signature invalid: the manifest signature does not match');
    const unknown = await snap(['verify', foreign], trusted);
    expect(unknown.stdout).toContain(`signature present but not verified: none of the 1 trusted key(s) in ${trusted} matches it`);
  });

  it('restore: verified goes on; present but not verified, invalid and unsigned are refused with exit 11, each said as such', async () => {
    const ok = await snap(['restore', signedDisclaimed], trusted);
    expect(ok.stderr).not.toMatch(/error: .*(signature|not signed)/);
    const refusals: [string, RegExp][] = [
      [foreign, /signature present but not verified/],
      [garbage, /signature invalid: manifest\.sig is 4000 bytes, not a 64-byte Ed25519 signature/],
      [claims, /is not signed/],
    ];
    for (const [bundle, why] of refusals) {
      const run = await snap(['restore', bundle], trusted);
      expect(run.exitCode, run.stderr).toBe(11);
      expect(run.stderr.split('\n').filter((l) => l.startsWith('snap: error:'))[0]).toMatch(why);
      expect(readdirSync(work)).toEqual([]);
    }
  });
});

describe('a key given with --key is held to the same rule: no one else can have written it', () => {
  /** A copy of team.pub where the test says, root's and 0644 unless changed. */
  function keyAt(dir: string, name = 'team.pub'): string {
    const key = join(dir, name);
    writeFileSync(key, readFileSync(`${team()}.pub`));
    chmodSync(key, 0o644);
    return key;
  }

  /** Every command that takes --key refuses it: exit 11, one error line naming the key, why and the fix; nothing restored. */
  async function expectKeyRefused(key: string, why: RegExp, fix: RegExp): Promise<void> {
    const trusted = keyTree().dir; // a good trusted-keys directory that verifies the bundle: --key must not fall back on it
    for (const command of ['restore', 'verify', 'inspect', 'list']) {
      const run = await snap([command, command === 'list' ? bundles : signed, '--key', key], trusted);
      expect(run.exitCode, `${command}: ${run.stderr}`).toBe(11);
      const errors = run.stderr.split('\n').filter((l) => l.startsWith('snap: error:'));
      expect(errors, `${command}: ${run.stderr}`).toHaveLength(1);
      expect(errors[0]).toContain(`the key given with --key, ${key}, is not trusted: `);
      expect(errors[0]).toMatch(why);
      expect(errors[0]).toMatch(fix);
      expect(run.stdout, command).not.toContain('signed and verified');
    }
    expect(readdirSync(work), 'nothing extracted').toEqual([]);
  }

  it('root-owned, 0644, in a private directory under the sticky temp directory: trusted by verify, inspect and restore', async () => {
    const key = keyAt(makeTempDir('snap-named-key-'));
    const verify = await snap(['verify', signed, '--key', key], keyTree().dir);
    expect(verify.exitCode, verify.stderr).toBe(0);
    expect(verify.stdout).toContain(`signed and verified by ${key} (${fingerprintOf(key)})`);
    const inspect = await snap(['inspect', signed, '--key', key, '--json'], keyTree().dir);
    expect(JSON.parse(inspect.stdout).signature).toEqual({ state: 'verified', keyFile: key, fingerprint: fingerprintOf(key) });
    const restore = await snap(['restore', signed, '--key', key], keyTree().dir);
    expect(restore.stderr).not.toMatch(/signature|trusted|not signed/);
    expect(restore.stderr).toMatch(/CRIU images cannot be read/);
  });

  it('root-owned, 0644, right in a world-writable directory with the sticky bit (as /tmp is): trusted', async () => {
    const sticky = join(makeTempDir('snap-named-key-'), 'shared');
    mkdirSync(sticky);
    chmodSync(sticky, 0o1777);
    const key = keyAt(sticky);
    const verify = await snap(['verify', signed, '--key', key], keyTree().dir);
    expect(verify.exitCode, verify.stderr).toBe(0);
    expect(verify.stdout).toContain(`signed and verified by ${key}`);
  });

  it('a symbolic link to a good key: trusted as the file it leads to; a link another user owns in a sticky directory: refused', async () => {
    const dir = makeTempDir('snap-named-key-');
    const key = keyAt(dir);
    const link = join(dir, 'link.pub');
    symlinkSync(key, link);
    const verify = await snap(['verify', signed, '--key', link], keyTree().dir);
    expect(verify.exitCode, verify.stderr).toBe(0);
    expect(verify.stdout).toContain(`signed and verified by ${link}`);

    const sticky = join(dir, 'shared');
    mkdirSync(sticky);
    chmodSync(sticky, 0o1777);
    const theirs = join(sticky, 'team.pub');
    symlinkSync(key, theirs);
    // lchown: the link itself is theirs, so they may swap it for one to any key they like.
    execFileSync('chown', ['-h', '65534:65534', theirs]);
    await expectKeyRefused(theirs, new RegExp(`the symbolic link ${theirs} is owned by uid 65534, not root`), /give the key file's own path with --key/);
  });

  it('mode 0666: refused naming it and `chmod 644`', async () => {
    const key = keyAt(makeTempDir('snap-named-key-'));
    chmodSync(key, 0o666);
    await expectKeyRefused(key, new RegExp(`${key} is mode 0666, writable by others`), new RegExp(`chmod 644 ${key}`));
  });

  it('owned by another user (uid 65534): refused naming it and `chown root`', async () => {
    const key = keyAt(makeTempDir('snap-named-key-'));
    chownSync(key, 65534, 65534);
    await expectKeyRefused(key, new RegExp(`${key} is owned by uid 65534, not root`), new RegExp(`chown root ${key}`));
  });

  it('in a world-writable directory without the sticky bit: refused naming the directory and `chmod 755`', async () => {
    const open = join(makeTempDir('snap-named-key-'), 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    const key = keyAt(open);
    await expectKeyRefused(key, new RegExp(`${open} is mode 0777, writable by others`), new RegExp(`chmod 755 ${open}`));
  });

  it('a hard link to a 0666 file, and to a 0644 one: refused (another name can change it)', async () => {
    const dir = makeTempDir('snap-named-key-');
    const outside = keyAt(dir, 'outside.pub');
    chmodSync(outside, 0o666);
    const linked = join(dir, 'linked.pub');
    linkSync(outside, linked);
    await expectKeyRefused(linked, /mode 0666, writable by others, and .* has 2 hard links/, new RegExp(`chmod 644 ${linked}, then give it a name of its own`));
    chmodSync(outside, 0o644);
    await expectKeyRefused(linked, new RegExp(`${linked} has 2 hard links, so another name can change it`), new RegExp(`cp ${linked} ${linked}.new && mv ${linked}.new ${linked}`));
  });

  it('an unsigned bundle restored with --allow-unsigned and such a --key: refused all the same, naming the key', async () => {
    const key = keyAt(makeTempDir('snap-named-key-'));
    chmodSync(key, 0o666);
    const run = await snap(['restore', claims, '--allow-unsigned', '--key', key], keyTree().dir);
    expect(run.exitCode, run.stderr).toBe(11);
    expect(run.stderr).toContain(`the key given with --key, ${key}, is not trusted: `);
    expect(readdirSync(work)).toEqual([]);
  });
});
