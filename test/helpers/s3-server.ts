// A real S3-compatible server for the tests that upload (s3rver, from npm), on a free port of 127.0.0.1 with the
// bucket made, stopped by its pid; and the environment that points snap's AWS SDK at it and at nothing of the host.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { makeTempDir } from './bundle.js';
import { nodeBin, repoRoot } from './paths.js';
import { waitFor } from './target.js';

export const BUCKET = 'captures';

export interface S3Server {
  child: ChildProcess;
  endpoint: string;
}

/** s3rver with BUCKET made; resolves once it listens. Stop it with stopS3Server. */
export async function startS3Server(): Promise<S3Server> {
  const data = makeTempDir('snap-s3-data-');
  const child = spawn(nodeBin, [join(repoRoot, 'node_modules/s3rver/bin/s3rver.js'), '-d', data, '-a', '127.0.0.1', '-p', '0', '--configure-bucket', BUCKET], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const port = await waitFor(() => /listening on 127\.0\.0\.1:(\d+)/.exec(out)?.[1], { what: `s3rver to listen (${out})`, timeoutMs: 20_000 });
  return { child, endpoint: `http://127.0.0.1:${port}` };
}

export async function stopS3Server(s: S3Server): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return;
  const gone = new Promise((r) => s.child.once('exit', r));
  process.kill(s.child.pid!, 'SIGKILL');
  await gone;
}

/** snap's environment for the server: its endpoint and s3rver's own credentials; no profile of the host is read. */
export const s3Env = (s: S3Server, journalDir: string): Record<string, string> => ({
  PROCSNAP_JOURNAL_DIR: journalDir,
  AWS_ENDPOINT_URL: s.endpoint,
  AWS_REGION: 'us-east-1',
  AWS_ACCESS_KEY_ID: 'S3RVER',
  AWS_SECRET_ACCESS_KEY: 'S3RVER',
  AWS_CONFIG_FILE: '/dev/null',
  AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
});
