// What people expect of a command-line program: -h, `help CMD`, `version`, a man page, shell completion, and every
// text in the name they typed (`procsnap` where `snap` is snapd's).
import { Config } from '@oclif/core';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot, runSnap, snapWithPeak } from '../helpers/cli.js';
import { nodeBin } from '../helpers/paths.js';

const journalDir = mkdtempSync(join(tmpdir(), 'snap-conventions-journal-'));
const env = { PROCSNAP_JOURNAL_DIR: journalDir };
const asProcsnap = { ...env, PROCSNAP_INVOKED_AS: 'procsnap' };
let commandIds: string[] = [];

beforeAll(async () => {
  const config = await Config.load(repoRoot);
  commandIds = config.commands.filter((c) => !c.hidden).map((c) => c.id);
});
afterAll(() => rmSync(journalDir, { recursive: true, force: true }));

describe('help', () => {
  it('-h, --help and `help` print the same list of every command, exit 0', async () => {
    const runs = await Promise.all([['-h'], ['--help'], ['help']].map((a) => runSnap(a, { env })));
    for (const r of runs) expect(r.exitCode, r.stderr).toBe(0);
    expect(runs[0]!.stdout).toBe(runs[1]!.stdout);
    expect(runs[2]!.stdout).toBe(runs[1]!.stdout);
    for (const id of commandIds) expect(runs[0]!.stdout).toMatch(new RegExp(`^  ${id} `, 'm'));
  });

  it('`help dump` is `dump --help` is `dump -h`', async () => {
    const [a, b, c] = await Promise.all([['help', 'dump'], ['dump', '--help'], ['dump', '-h']].map((x) => runSnap(x, { env })));
    expect(a!.exitCode).toBe(0);
    expect(a!.stdout).toMatch(/^  \$ snap dump \[PID\]/m);
    expect(b!.stdout).toBe(a!.stdout);
    expect(c!.stdout).toBe(a!.stdout);
  });

  it('`help` of a command that does not exist: one line naming the nearest, exit 2', async () => {
    const r = await runSnap(['help', 'restor'], { env });
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim()).toBe('snap: error: no command "restor" to explain; did you mean `snap help restore`? `snap help` lists the commands');
  });
});

describe('version', () => {
  it('`version` prints the --version line; --json gives its parts', async () => {
    const [line, flag, json] = await Promise.all([['version'], ['--version'], ['version', '--json']].map((a) => runSnap(a, { env })));
    expect(line!.exitCode).toBe(0);
    expect(line!.stdout).toBe(flag!.stdout);
    const v = JSON.parse(json!.stdout) as { name: string; version: string; node: string; platform: string; arch: string };
    expect(`${v.name}/${v.version} ${v.platform}-${v.arch} node-${v.node}\n`).toBe(flag!.stdout);
  });
});

describe('the name typed', () => {
  it('invoked as procsnap, help and errors say procsnap, never `snap ...`', async () => {
    const help = await runSnap(['help', 'restore'], { env: asProcsnap });
    expect(help.stdout).toMatch(/^  \$ procsnap restore BUNDLE/m);
    expect(help.stdout).toContain('bundle written by `procsnap dump`');
    expect(help.stdout).not.toMatch(/`snap\b|\$ snap\b/);
    const missing = await runSnap(['inspect', '/nonexistent/bundle.tar.zst'], { env: asProcsnap });
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr.trim()).toBe('procsnap: error: bundle /nonexistent/bundle.tar.zst does not exist; give the path of a bundle written by `procsnap dump`');
    const json = await runSnap(['inspect', '/nonexistent/bundle.tar.zst', '--json'], { env: asProcsnap });
    expect(JSON.parse(json.stdout).error.hint).toBe('give the path of a bundle written by `procsnap dump`');
    const typo = await runSnap(['dumpp'], { env: asProcsnap });
    expect(typo.stderr.trim()).toBe('procsnap: error: unknown command "dumpp"; did you mean `procsnap dump`? `procsnap --help` lists the commands');
  });

  it('every command\'s help, invoked as procsnap, names no `snap` command', async () => {
    for (const id of commandIds) {
      const r = await runSnap([id, '--help'], { env: asProcsnap });
      expect(r.exitCode, id).toBe(0);
      expect(r.stdout, id).not.toMatch(/`snap\b|\$ snap\b/);
    }
  });

  it('invoked as procsnap, the list of commands names procsnap: its completion script, its help, its version', async () => {
    const r = await runSnap(['--help'], { env: asProcsnap });
    expect(r.exitCode, r.stderr).toBe(0);
    const text = r.stdout.replace(/\s+/g, ' ');
    expect(text).toContain('completion script for procsnap');
    expect(text).toContain('Show help for procsnap');
    expect(text).toContain("procsnap's version");
    expect(text).not.toMatch(/\bfor snap\b|\bsnap's\b/);
  });

  it('the launcher passes the name it was run by: a link named procsnap speaks as procsnap, any other name as snap', () => {
    const dir = mkdtempSync(join(tmpdir(), 'snap-names-'));
    try {
      for (const [link, said] of [['procsnap', 'procsnap'], ['snap', 'snap'], ['capture-tool', 'snap']] as const) {
        symlinkSync(join(repoRoot, 'bin', 'snap'), join(dir, link));
        const r = spawnSync(join(dir, link), ['frobnicate'], { encoding: 'utf8', env: { ...process.env, ...env, NO_COLOR: '1' } });
        expect(r.status, link).toBe(2);
        expect(r.stderr.trim(), link).toBe(`${said}: error: unknown command "frobnicate"; \`${said} --help\` lists the commands`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('dump --help', () => {
  it('a usage line without an empty alternative, tool flags naming PROCSNAP_* and the private prefix, --json saying what it prints', async () => {
    const r = await runSnap(['dump', '--help'], { env: asProcsnap });
    expect(r.exitCode, r.stderr).toBe(0);
    const usage = r.stdout.slice(r.stdout.indexOf('USAGE'), r.stdout.indexOf('ARGUMENTS')).replace(/\s+/g, ' ');
    expect(usage).toContain('[--core images|gcore|native] [--core-only | --criu-opt <value>...]');
    expect(usage).not.toMatch(/\|\s*\|/);
    const text = r.stdout.replace(/\s+/g, ' ');
    expect(text).toContain('criu binary to use (default: $PROCSNAP_CRIU, then /opt/procsnap/bin/criu, then PATH)');
    expect(text).toContain('gdb binary to use (default: $PROCSNAP_GDB, then /opt/procsnap/bin/gdb, then PATH)');
    expect(text).toContain('--json print the result as one JSON document on stdout');
    expect(text).not.toMatch(/(?<!PROC)SNAP_(CRIU|GDB)/);
  });

  it('no command says "Format output as json."', async () => {
    for (const id of commandIds) {
      const r = await runSnap([id, '--help'], { env });
      expect(r.stdout, id).not.toContain('Format output as json');
    }
  });

  it('`procsnap dump --help | head -1`: the reader gone, the rest is dropped quietly, exit 0', () => {
    // The reader closes its end at once, before the help is written: every write after that fails with EPIPE.
    const r = spawnSync('bash', ['-c', '"$0" "$1" dump --help | { exec 0<&-; sleep 1; }; echo "exit=${PIPESTATUS[0]}"', nodeBin, join(repoRoot, 'bin', 'run.js')], {
      encoding: 'utf8',
      env: { ...process.env, ...asProcsnap, NO_COLOR: '1' },
    });
    expect(r.stdout.trim()).toBe('exit=0');
    expect(r.stderr).toBe('');
    const head = spawnSync('bash', ['-c', '"$0" "$1" dump --help | head -1; echo "exit=${PIPESTATUS[0]}"', nodeBin, join(repoRoot, 'bin', 'run.js')], {
      encoding: 'utf8',
      env: { ...process.env, ...asProcsnap, NO_COLOR: '1' },
    });
    expect(head.stdout).toMatch(/^Capture a live process .*\nexit=0\n$/);
    expect(head.stderr).toBe('');
  });
});

describe('installed names', () => {
  it('npm installs procsnap only: no `snap` bin, which would shadow snapd\'s', () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    expect(Object.keys(pkg.bin)).toEqual(['procsnap']);
  });

  it('the demo runs the program as procsnap, and its headings name procsnap commands', () => {
    const demo = readFileSync(join(repoRoot, 'scripts', 'demo.sh'), 'utf8');
    expect(demo).toMatch(/^SNAP="\$DIR\/procsnap"$/m);
    const headings = demo.split('\n').filter((l) => /^say /.test(l));
    expect(headings.length).toBeGreaterThan(3);
    for (const h of headings) expect(h).not.toMatch(/(?<!proc)snap /);
    expect(headings.filter((h) => h.includes('procsnap '))).not.toHaveLength(0);
  });
});

describe('the environment it is run from', () => {
  it('NODE_ENV=development or test (a developer\'s shell, a test runner) changes nothing: same output, same memory', () => {
    const runs = ['production', 'development', 'test'].map((NODE_ENV) => snapWithPeak(['doctor', '--no-canary', '--json'], { ...env, NODE_ENV }));
    for (const r of runs) expect(r.run.stderr).not.toMatch(/Could not find source|ts-node|tsconfig/);
    const [prod, ...others] = runs.map((r) => r.peakKiB / 1024);
    // oclif, left to itself, loads the TypeScript compiler in development and test: 40 MiB more, measured here.
    for (const mib of others) expect(Math.abs(mib - prod!)).toBeLessThan(15);
  });
});

describe('shell completion', () => {
  /** What bash completes for a command line whose last word is being typed (cur may be ''). */
  function complete(script: string, words: string[]): string[] {
    const program = [
      script,
      `COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')})`,
      `COMP_CWORD=${words.length - 1}`,
      '_snap_complete',
      'printf "%s\\n" "${COMPREPLY[@]}"',
    ].join('\n');
    const r = spawnSync('bash', ['--norc', '--noprofile', '-c', program], { encoding: 'utf8', cwd: repoRoot });
    expect(r.status, r.stderr).toBe(0);
    return r.stdout.split('\n').filter(Boolean).sort();
  }

  it('completes command names, a command\'s flags, and the values of a flag with a fixed set', async () => {
    const r = await runSnap(['autocomplete', 'bash'], { env });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^complete -o filenames -F _snap_complete snap$/m);
    expect(complete(r.stdout, ['snap', ''])).toEqual(expect.arrayContaining(commandIds));
    expect(complete(r.stdout, ['snap', 're'])).toEqual(['recover', 'restore']);
    expect(complete(r.stdout, ['snap', 'dump', '4242', '--cor'])).toEqual(['--core', '--core-only', '--cores']);
    expect(complete(r.stdout, ['snap', 'dump', '--core', ''])).toEqual(['gcore', 'images', 'native']);
    expect(complete(r.stdout, ['snap', 'restore', 'bundle.tar.zst', '--new'])).toEqual(['--new-pidns']);
    // Anything else is a file name: the bundle, a key.
    expect(complete(r.stdout, ['snap', 'inspect', 'package.js'])).toEqual(['package.json']);
  });

  it('invoked as procsnap, the script registers procsnap only (never another program\'s snap)', async () => {
    const r = await runSnap(['autocomplete', 'bash'], { env: asProcsnap });
    expect(r.stdout).toMatch(/^complete -o filenames -F _procsnap_complete procsnap$/m);
    expect(r.stdout).not.toMatch(/ snap$/m);
  });
});

describe('man page', () => {
  const page = join(repoRoot, 'dist', 'man', 'procsnap.1');

  it('is generated at build for every command and flag, and renders without a warning', async () => {
    const text = readFileSync(page, 'utf8');
    for (const id of commandIds) expect(text).toContain(`.SS procsnap ${id}`);
    for (const flag of ['leave', 'core', 'include-binaries', 'sign', 'allow-unsigned', 'new-pidns', 'dry-run']) expect(text).toContain(`\\-\\-${flag.replace(/-/g, '\\-')}`);
    expect(text).toMatch(/^\.SH EXIT STATUS$/m);
    const groff = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-P-cbou', page], { encoding: 'utf8' });
    expect(groff.status).toBe(0);
    expect(groff.stderr).toBe('');
    expect(groff.stdout).toMatch(/procsnap dump \[PID\]/);
    expect(groff.stdout).not.toMatch(/`snap\b/);
    // The autocomplete entry, and every other description, in the page's own name.
    expect(groff.stdout.replace(/\s+/g, ' ')).toContain('completion script for procsnap');
    expect(groff.stdout).not.toMatch(/\bfor snap\b|\bsnap's\b/);
  });
});
