// Where the tests find the repository, its Node binary and the compiled fixture programs, wherever vitest runs from.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The Node the CLI is run with: the repo's own (>= 22), never whatever node is first on PATH. */
export const nodeBin = join(repoRoot, 'node_modules', '.bin', 'node');

/** A compiled test/fixtures/*.c program; scripts/setup.sh builds them into test/fixtures/bin/. */
export function fixtureBin(name: string): string {
  return join(repoRoot, 'test', 'fixtures', 'bin', name);
}

export function requireFixtureBin(name: string): string {
  const path = fixtureBin(name);
  if (!existsSync(path)) {
    throw new Error(
      `${path} is missing: build the fixtures first (bash scripts/setup.sh, or ` +
        `gcc -O1 -g -pthread -o test/fixtures/bin/${name} test/fixtures/${name}.c)`,
    );
  }
  return path;
}
