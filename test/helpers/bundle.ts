// The tests' own view of a bundle: extracted with the system tar, hashed and schema-checked here, independent of
// src/bundle/reader.ts, so that they can judge what `snap dump` wrote.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, lstatSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import type { Manifest } from '../../src/bundle/manifest.js';
import { runSnap } from './cli.js';
import { repoRoot } from './paths.js';

const execFileAsync = promisify(execFile);

/** A fresh private temporary directory; removeTempDirs() removes every one made so far. */
const tempDirs = new Set<string>();
export function makeTempDir(prefix = 'snap-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}
/**
 * A fresh private directory where snap trusts keys: every directory from it up to / owned by root (or this user) and
 * writable by no one else. The system temp dir is world-writable (sticky /tmp), so trusted keys cannot live there;
 * /run, the checkout or the home directory can. removeTempDirs() removes it too.
 */
export function makeSafeDir(prefix = 'snap-test-safe-'): string {
  const safe = (dir: string): boolean => {
    for (let p = dir; ; p = dirname(p)) {
      try {
        const st = lstatSync(p);
        if ((st.uid !== 0 && st.uid !== process.geteuid!()) || st.mode & 0o022 || st.isSymbolicLink()) return false;
      } catch {
        return false;
      }
      if (p === dirname(p)) return true;
    }
  };
  const base = [process.env.PROCSNAP_TEST_SAFE_DIR, '/run', repoRoot, homedir()].find((d): d is string => !!d && safe(d));
  if (!base) throw new Error('no directory here is safe for trusted keys (set PROCSNAP_TEST_SAFE_DIR to one only root can write)');
  const dir = mkdtempSync(join(base, prefix));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDirs(): void {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

/** The first `n` bytes of a file. */
export function readHead(path: string, n = 512): Buffer {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(n);
    const got = readSync(fd, head, 0, n, 0);
    return head.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

function tarCompressionFlag(bundle: string): string[] {
  const head = readHead(bundle, 4);
  if (head.equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return ['--zstd'];
  if (head.subarray(0, 2).equals(Buffer.from([0x1f, 0x8b]))) return ['--gzip'];
  return [];
}

/** The entry names in archive order, as the system tar lists them. */
export async function listBundle(bundle: string): Promise<string[]> {
  const { stdout } = await execFileAsync('tar', [...tarCompressionFlag(bundle), '-tf', bundle], { maxBuffer: 1 << 24 });
  return stdout.split('\n').filter((line) => line.length > 0);
}

/**
 * Extracts the bundle with the system tar into a new temporary directory and returns that directory. A core the
 * bundle keeps as a recipe over its CRIU images is then written beside the rest as core.PID by `snap core`, which
 * checks it against the sha256 recorded at the dump: the directory holds what a user gets out of the bundle.
 */
export async function extractBundle(bundle: string): Promise<string> {
  const dir = makeTempDir('snap-test-extract-');
  await execFileAsync('tar', [...tarCompressionFlag(bundle), '-xf', bundle, '-C', dir]);
  for (const p of readExtractedManifest(dir).processes ?? []) {
    if (p.coreStored !== false || !p.core) continue;
    const pid = p.hostPid ?? p.pid;
    const run = await runSnap(['core', bundle, '--pid', String(pid), '-o', join(dir, p.core)]);
    if (run.exitCode !== 0) throw new Error(`snap core of ${pid} failed (exit ${run.exitCode}): ${run.stderr}`);
  }
  return dir;
}

export function readExtractedManifest(dir: string): Manifest {
  return JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest;
}

/** Only manifest.json, read straight out of the bundle. */
export async function readBundleManifest(bundle: string): Promise<Manifest> {
  const { stdout } = await execFileAsync('tar', [...tarCompressionFlag(bundle), '-xOf', bundle, 'manifest.json'], { maxBuffer: 1 << 26 });
  return JSON.parse(stdout) as Manifest;
}

export function sha256OfFile(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

type Validate = ((data: unknown) => boolean) & { errors?: { instancePath: string; message?: string }[] | null };
const validators = new Map<number, Validate>();

/** Problems found by validating against manifests/manifest-vN.schema.json (N: the version the manifest declares) with
 *  ajv, read here independently of src/; empty when valid. */
export function schemaProblems(manifest: unknown): string[] {
  const declared = Number((manifest as { schemaVersion?: unknown })?.schemaVersion);
  // The schema the manifest declares, where there is one; else the newest (a bad version is then one more problem).
  const versions = readdirSync(join(repoRoot, 'manifests'))
    .map((n) => Number(/^manifest-v(\d+)\.schema\.json$/.exec(n)?.[1]))
    .filter((n) => Number.isInteger(n) && n > 0);
  const version = versions.includes(declared) ? declared : Math.max(...versions);
  let validator = validators.get(version);
  if (!validator) {
    const ajv = new Ajv2020({ allErrors: true, strict: true });
    const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (a: unknown) => void;
    addFormats(ajv);
    const schema = JSON.parse(readFileSync(join(repoRoot, 'manifests', `manifest-v${version}.schema.json`), 'utf8'));
    validator = ajv.compile(schema) as Validate;
    validators.set(version, validator);
  }
  if (validator(manifest)) return [];
  return (validator.errors ?? []).map((e) => `${e.instancePath || '/'}: ${e.message ?? 'invalid'}`);
}
