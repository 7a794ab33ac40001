// ansible/capture.yml with Debian's ansible-core: over real SSH to three hosts (three sshd instances started here on
// 127.0.0.1, each its own host to ansible, all of them this machine), one host at a time, each bundle fetched into
// DEST/HOST/ and one summary line per host; then `-c local` on localhost, with age recipients, and a target that is
// not there (its line says the error). Every sshd is stopped by its pid.
import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { repoRoot, runSnap } from '../helpers/cli.js';
import { killPid, readProcStat, waitFor } from '../helpers/target.js';

const SSHD = '/usr/sbin/sshd';
const haveTools = spawnSync('ansible-playbook', ['--version']).status === 0 && existsSync(SSHD) && spawnSync('ssh-keygen', ['-?']).status !== null;

let work: string;
let journalDir: string;
const sshds: ChildProcess[] = [];
const pids: number[] = [];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** An sshd on 127.0.0.1 that takes the test's key for root; resolves with its port once it listens. */
async function startSshd(name: string, clientPub: string): Promise<number> {
  const dir = join(work, name);
  execFileSync('mkdir', ['-p', dir, '/run/sshd']);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
  copyFileSync(clientPub, join(dir, 'authorized_keys'));
  const port = await freePort();
  const config = join(dir, 'sshd_config');
  writeFileSync(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host_key')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'Subsystem sftp /usr/lib/openssh/sftp-server',
      '',
    ].join('\n'),
  );
  const child = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  sshds.push(child);
  let log = '';
  child.stderr!.on('data', (c: Buffer) => (log += c.toString()));
  await waitFor(() => log.includes('Server listening'), { what: `sshd ${name} to listen`, timeoutMs: 10_000, detail: () => log });
  return port;
}

/** A process named `name` (a copy of sleep under that name), in a session of its own. */
function startNamed(name: string): number {
  const exe = join(work, name);
  copyFileSync('/bin/sleep', exe);
  execFileSync('chmod', ['0755', exe]);
  const child = spawn(exe, ['1000'], { detached: true, stdio: 'ignore' });
  child.unref();
  pids.push(child.pid!);
  return child.pid!;
}

function playbook(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('ansible-playbook', [join(repoRoot, 'ansible/capture.yml'), ...args], {
    cwd: work,
    encoding: 'utf8',
    timeout: 300_000,
    env: { ...process.env, ANSIBLE_NOCOLOR: '1', ANSIBLE_HOST_KEY_CHECKING: 'False', ANSIBLE_RETRY_FILES_ENABLED: 'False', ANSIBLE_LOCAL_TEMP: join(work, '.ansible-local') },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const common = () => ['-e', `procsnap_command=${join(repoRoot, 'bin/snap')}`, '-e', JSON.stringify({ procsnap_environment: { PROCSNAP_JOURNAL_DIR: journalDir } })];

beforeAll(() => {
  work = makeTempDir('snap-ansible-');
  journalDir = makeTempDir('snap-ansible-journal-');
});
afterAll(async () => {
  for (const s of sshds) if (s.exitCode === null && s.signalCode === null) process.kill(s.pid!, 'SIGTERM');
  for (const pid of pids) await killPid(pid);
  removeTempDirs();
});

describe.skipIf(!haveTools)('ansible/capture.yml', () => {
  it('captures on three hosts over SSH, one at a time: three bundles fetched and one line per host', async () => {
    const key = join(work, 'client_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const ports = [await startSshd('web1', `${key}.pub`), await startSshd('web2', `${key}.pub`), await startSshd('web3', `${key}.pub`)];
    const name = `fleet${process.pid % 100000}`;
    const pid = startNamed(name);
    const inventory = join(work, 'inventory.yml');
    writeFileSync(
      inventory,
      JSON.stringify({
        all: {
          hosts: Object.fromEntries(ports.map((p, i) => [`web${i + 1}`, { ansible_host: '127.0.0.1', ansible_port: p }])),
          vars: {
            ansible_user: 'root',
            ansible_ssh_private_key_file: key,
            ansible_ssh_common_args: '-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null',
            ansible_python_interpreter: '/usr/bin/python3',
          },
        },
      }),
    );
    const dest = join(work, 'captures');
    const summary = join(work, 'summary.txt');
    // One at a time: the three hosts are one machine, and the same process may not be captured twice at once. The
    // name is in a file: on an ansible-playbook command line seen by the hosts (this machine) it would match too.
    const vars = join(work, 'target.json');
    writeFileSync(vars, JSON.stringify({ procsnap_target: name }));
    const run = playbook(['-i', inventory, '-e', `@${vars}`, '-e', `procsnap_dest=${dest}`, '-e', 'procsnap_parallel=1', '-e', `procsnap_summary_file=${summary}`, ...common()]);
    expect(run.status, run.stdout + run.stderr).toBe(0);

    const lines = readFileSync(summary, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(3);
    for (const host of ['web1', 'web2', 'web3']) {
      expect(existsSync(join(dest, host)), lines.join('\n')).toBe(true);
      const files = readdirSync(join(dest, host));
      expect(files, host).toHaveLength(1);
      const bundle = join(dest, host, files[0]!);
      const line = lines.find((l) => l.startsWith(`${host} `));
      expect(line, host).toMatch(new RegExp(`^${host} pid ${pid} freeze [0-9.]+ ms ${bundle.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`));
      expect(run.stdout).toContain(`"msg": "${line}"`);
      const verify = await runSnap(['verify', bundle]);
      expect(verify.exitCode, verify.stderr).toBe(0);
    }
    expect(readProcStat(pid)?.state).toMatch(/[RS]/);
  });

  it('-c local on localhost, encrypted for procsnap_recipients; a target that is not there is one error line', async () => {
    const name = `local${process.pid % 100000}`;
    const pid = startNamed(name);
    const identity = join(work, 'analyst.key');
    execFileSync('age-keygen', ['-o', identity], { stdio: 'ignore' });
    const recipient = execFileSync('age-keygen', ['-y', identity], { encoding: 'utf8' }).trim();
    const dest = join(work, 'local-captures');
    const run = playbook(['-i', 'localhost,', '-c', 'local', '-e', `procsnap_target=${name}`, '-e', `procsnap_dest=${dest}`, '-e', JSON.stringify({ procsnap_recipients: [recipient] }), ...common()]);
    expect(run.status, run.stdout + run.stderr).toBe(0);
    const files = readdirSync(join(dest, 'localhost'));
    expect(files).toHaveLength(1);
    const bundle = join(dest, 'localhost', files[0]!);
    expect(readFileSync(bundle).subarray(0, 21).toString('latin1')).toBe('age-encryption.org/v1');
    expect(run.stdout).toContain(`"msg": "localhost pid ${pid} freeze `);
    const inspect = await runSnap(['inspect', bundle, '--identity', identity, '--json']);
    expect(inspect.exitCode, inspect.stderr).toBe(0);

    const missing = playbook(['-i', 'localhost,', '-c', 'local', '-e', 'procsnap_target=no-such-process-here', '-e', `procsnap_dest=${dest}`, ...common()]);
    expect(missing.status, missing.stdout + missing.stderr).toBe(0);
    expect(missing.stdout).toMatch(/"msg": "localhost error \(exit 3\): .*no-such-process-here/);
  });
});
