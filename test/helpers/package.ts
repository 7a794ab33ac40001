// The standalone executable (`npm run build:binary`) and the Debian package (`npm run build:deb`), for the tests
// that need them: built once per checkout, again only when what they are made of is newer.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

export const binaryPath = join(repoRoot, 'build', 'procsnap');

const newerThan = (built: string, sources: string[]) => !existsSync(built) || sources.some((f) => existsSync(f) && statSync(f).mtimeMs > statSync(built).mtimeMs);

/** build/procsnap, built when missing or older than the build it packs. */
export function ensureBinary(): string {
  const sources = [join(repoRoot, 'dist', '.build-stamp'), join(repoRoot, 'bin', 'sea-launcher.cjs'), join(repoRoot, 'bin', 'run.js'), join(repoRoot, 'scripts', 'build-binary.mjs')];
  if (newerThan(binaryPath, sources))
    execFileSync(join(repoRoot, 'node_modules', '.bin', 'node'), [join(repoRoot, 'scripts', 'build-binary.mjs')], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 });
  return binaryPath;
}

/** build/procsnap_VERSION_amd64.deb, built when missing or older than the executable or its recipe. */
export function ensureDeb(): string {
  ensureBinary();
  const find = () => readdirSync(join(repoRoot, 'build')).find((f) => /^procsnap_.*_amd64\.deb$/.test(f));
  const existing = find();
  if (!existing || newerThan(join(repoRoot, 'build', existing), [binaryPath, join(repoRoot, 'scripts', 'build-deb.sh')]))
    execFileSync('bash', [join(repoRoot, 'scripts', 'build-deb.sh')], {
      stdio: ['ignore', 'ignore', 'inherit'],
      timeout: 600_000,
      env: { ...process.env, PATH: `${join(repoRoot, 'node_modules', '.bin')}:${process.env.PATH}` },
    });
  const built = find();
  if (!built) throw new Error('scripts/build-deb.sh made no package');
  return join(repoRoot, 'build', built);
}
