// Bundles shipped to an S3-compatible store: a real server (s3rver, from npm) started here on 127.0.0.1 and stopped
// by its pid. dump --upload puts the bundle and its sha256 there; list and fetch find and bring it back, held to that
// sha256; a server that stops in the middle of an upload leaves the local bundle whole and named (exit 16).
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap, startSnap, type SnapResult } from '../helpers/cli.js';
import { BUCKET, s3Env, startS3Server, stopS3Server, type S3Server as Server } from '../helpers/s3-server.js';
import { cleanupAllTargets, killPid, readProcStat, startTarget, waitFor } from '../helpers/target.js';

let journalDir: string;
let dir: string;

const servers: Server[] = [];
async function startServer(): Promise<Server> {
  const server = await startS3Server();
  servers.push(server);
  return server;
}
const stopServer = stopS3Server;
const env = (s: Server) => s3Env(s, journalDir);

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

beforeAll(() => {
  journalDir = makeTempDir('snap-upload-journal-');
  dir = makeTempDir('snap-upload-out-');
});
afterAll(async () => {
  for (const s of servers) await stopServer(s);
  await cleanupAllTargets();
  removeTempDirs();
});

interface Uploaded {
  bundle: string;
  upload: { url: string; size: number; sha256: string; kept?: string };
}

describe('dump --upload, list and fetch against an S3-compatible server', () => {
  let server: Server;
  beforeAll(async () => {
    server = await startServer();
  });

  it('uploads the bundle with its sha256, lists it, and fetches the same bytes back', async () => {
    const target = await startTarget({ threads: 2, mib: 16, group: 'setsid' });
    const bundle = join(dir, 'kept.tar.zst');
    const dump = await runSnap(['dump', String(target.pid), '-o', bundle, '--upload', `s3://${BUCKET}/api/`, '--keep-local', '--json', '--quiet'], { env: env(server) });
    expect(dump.exitCode, dump.stderr).toBe(0);
    expect(readProcStat(target.pid)?.state).toMatch(/[RS]/);
    const result = JSON.parse(dump.stdout) as Uploaded;
    expect(result.upload.url).toBe(`s3://${BUCKET}/api/kept.tar.zst`);
    expect(result.upload.kept).toBe(bundle);
    expect(result.upload.sha256).toBe(sha256(bundle));

    const list = await runSnap(['list', `s3://${BUCKET}/api/`, '--json'], { env: env(server) });
    expect(list.exitCode, list.stderr).toBe(0);
    const listed = (JSON.parse(list.stdout) as { objects: { url: string; size: number; hasSha256: boolean }[] }).objects;
    expect(listed).toContainEqual(expect.objectContaining({ url: result.upload.url, size: result.upload.size, hasSha256: true }));
    expect(listed.some((o) => o.url.endsWith('.sha256')), 'sidecars are not listed as bundles').toBe(false);

    const fetched = join(dir, 'fetched.tar.zst');
    const fetch = await runSnap(['fetch', result.upload.url, '-o', fetched, '--json'], { env: env(server) });
    expect(fetch.exitCode, fetch.stderr).toBe(0);
    expect(sha256(fetched)).toBe(result.upload.sha256);
    const verify = await runSnap(['verify', fetched], { env: env(server) });
    expect(verify.exitCode, verify.stderr).toBe(0);

    const again = await runSnap(['fetch', result.upload.url, '-o', fetched], { env: env(server) });
    expect(again.exitCode, 'never over an existing file').toBe(7);
    await target.cleanup();
  });

  it('without --keep-local the checked upload leaves no local bundle; an encrypted one is fetched and read with --identity', async () => {
    const target = await startTarget({ threads: 1, mib: 4, group: 'setsid' });
    const bundle = join(dir, 'gone.tar.zst');
    const recipient = 'age1tsv5ety8k6gayq6tram47f0pg5fn0g83faq9du9acrlhqd5nap8sx946xm';
    const dump = await runSnap(['dump', String(target.pid), '-o', bundle, '--encrypt-to', recipient, '--upload', `s3://${BUCKET}/enc`, '--json', '--quiet'], {
      env: env(server),
    });
    expect(dump.exitCode, dump.stderr).toBe(0);
    const result = JSON.parse(dump.stdout) as Uploaded;
    expect(result.upload.kept).toBeUndefined();
    expect(existsSync(bundle)).toBe(false);

    const fetched = join(dir, 'gone-fetched.tar.zst');
    const fetch = await runSnap(['fetch', `s3://${BUCKET}/enc/gone.tar.zst`, '-o', fetched], { env: env(server) });
    expect(fetch.exitCode, fetch.stderr).toBe(0);
    expect(sha256(fetched)).toBe(result.upload.sha256);
    const inspect = await runSnap(['inspect', fetched], { env: env(server) });
    expect(inspect.exitCode).toBe(11);
    expect(inspect.stderr).toContain(recipient);
    await target.cleanup();
  });

  it('fetch of an object changed in the store exits 11 and keeps nothing', async () => {
    const target = await startTarget({ threads: 1, mib: 4, group: 'setsid' });
    const bundle = join(dir, 'changed.tar.zst');
    const dump = await runSnap(['dump', String(target.pid), '-o', bundle, '--upload', `s3://${BUCKET}/api/`, '--keep-local', '--quiet'], { env: env(server) });
    expect(dump.exitCode, dump.stderr).toBe(0);
    await target.cleanup();
    // Someone with write access to the bucket puts other bytes under the bundle's key; its sha256 stays as uploaded.
    const bytes = readFileSync(bundle);
    bytes[bytes.length - 1] = bytes.at(-1)! ^ 0xff;
    const s3 = new S3Client({ endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'api/changed.tar.zst', Body: bytes }));
    s3.destroy();
    const out = join(dir, 'changed-fetched.tar.zst');
    const fetch = await runSnap(['fetch', `s3://${BUCKET}/api/changed.tar.zst`, '-o', out], { env: env(server) });
    expect(fetch.exitCode, fetch.stderr).toBe(11);
    expect(fetch.stderr).toContain('does not match the sha256 its upload recorded');
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(dir).filter((n) => n.includes('changed-fetched'))).toEqual([]);
  });

  it('fetch of a key that is not there exits 11 and leaves no file', async () => {
    const out = join(dir, 'missing.tar.zst');
    const fetch = await runSnap(['fetch', `s3://${BUCKET}/api/missing.tar.zst`, '-o', out], { env: env(server) });
    expect(fetch.exitCode).toBe(11);
    expect(fetch.stderr).toContain('missing.tar.zst.sha256');
    expect(existsSync(out)).toBe(false);
  });
});

describe('a server that stops in the middle of an upload', () => {
  it('keeps the local bundle whole, names it, and exits 16', async () => {
    const server = await startServer();
    const target = await startTarget({ threads: 2, mib: 64, group: 'setsid' });
    const bundle = join(dir, 'interrupted.tar.zst');
    const run = startSnap(['dump', String(target.pid), '-o', bundle, '--upload', `s3://${BUCKET}/api/`], { env: env(server) });
    let stderr = '';
    run.child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    // Frozen as the upload starts, then killed: whatever reached it, the upload cannot complete.
    await waitFor(() => stderr.includes('uploading '), { what: 'the upload to start', timeoutMs: 100_000 });
    process.kill(server.child.pid!, 'SIGSTOP');
    await new Promise((r) => setTimeout(r, 500));
    await stopServer(server);
    const result: SnapResult = await run.result;
    expect(result.exitCode, result.stderr).toBe(16);
    expect(result.stderr).toContain(`uploading ${bundle} to s3://${BUCKET}/api/interrupted.tar.zst failed`);
    expect(result.stderr).toContain(`the bundle is kept at ${bundle}`);
    expect(existsSync(bundle)).toBe(true);
    const verify = await runSnap(['verify', bundle], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(verify.exitCode, verify.stderr).toBe(0);
    expect(readProcStat(target.pid)?.state).toMatch(/[RS]/);
    await target.cleanup();
    await killPid(target.pid);
  });
});
