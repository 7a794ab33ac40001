// ansible/capture.yml with Debian's ansible-core: over real SSH to three hosts, each an sshd started here on
// 127.0.0.1 in a PID namespace of its own (its own /proc) with its own process of the one name, captured at once, each
// bundle fetched into DEST/HOST/ and one summary line per host; a host without procsnap (a root of its own, an overlay
// over this machine's) that the role installs the .deb on; then `-c local` on localhost, with age recipients, and a
// target that is not there (its line says the error). Each namespace ends with its unshare, stopped by pid.
import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { repoRoot, runSnap } from '../helpers/cli.js';
import { ensureDeb } from '../helpers/package.js';
import { killPid, waitFor } from '../helpers/target.js';

const SSHD = '/usr/sbin/sshd';
const haveTools = spawnSync('ansible-playbook', ['--version']).status === 0 && existsSync(SSHD) && spawnSync('ssh-keygen', ['-?']).status !== null;

let work: string;
let journalDir: string;
const namespaces: ChildProcess[] = [];
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

/**
 * A host: an sshd on 127.0.0.1 that takes the test's key for root, in a new PID namespace with its own /proc, beside
 * a process named `name` (a copy of sleep) of that namespace. Their descriptors are opened inside it: criu cannot
 * place a file opened through the mounts of another namespace. Resolves with the port once it takes connections.
 * With `ownRoot`, the host's root is an overlay over this machine's, its changes in a tmpfs of its own mount namespace
 * (the test's directory bound in): what is installed there stays there, and is seen through /proc/PID/root.
 */
async function startHost(host: string, clientPub: string, name: string, ownRoot = false): Promise<number> {
  const dir = join(work, host);
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
  const exe = namedCopy(name);
  let script = `exec </dev/null >/dev/null 2>&1; setsid ${exe} 1000 & exec ${SSHD} -D -f ${config}`;
  if (ownRoot) {
    const r = join(dir, 'root');
    script = [
      'set -e',
      `mkdir -p ${r}`,
      `mount -t tmpfs tmpfs ${r}`,
      `mkdir ${r}/upper ${r}/work ${r}/merged`,
      `mount -t overlay overlay -o lowerdir=/,upperdir=${r}/upper,workdir=${r}/work ${r}/merged`,
      `mount --rbind /dev ${r}/merged/dev`,
      `mount -t proc proc ${r}/merged/proc`,
      `mount --rbind /sys ${r}/merged/sys`,
      `mount -t tmpfs tmpfs ${r}/merged/run`,
      `mkdir -p ${r}/merged/run/sshd ${r}/merged${work}`,
      `mount --bind ${work} ${r}/merged${work}`,
      `exec chroot ${r}/merged sh -c ${JSON.stringify(script)}`,
    ].join('\n');
  }
  // --kill-child: the namespace's processes end when unshare does.
  const child = spawn('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child', ...(ownRoot ? ['--mount', '--propagation', 'private'] : []), '--', 'sh', '-c', script], { stdio: 'ignore' });
  namespaces.push(child);
  await waitFor(() => canConnect(port), { what: `sshd ${host} to take connections`, timeoutMs: 10_000 });
  return port;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(port, '127.0.0.1');
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** sleep, copied under `name` (its comm), once. */
function namedCopy(name: string): string {
  const exe = join(work, name);
  if (!existsSync(exe)) {
    copyFileSync('/bin/sleep', exe);
    execFileSync('chmod', ['0755', exe]);
  }
  return exe;
}

/** A process named `name`, in a session of its own, on this host's own PID namespace. */
function startNamed(name: string): number {
  const child = spawn(namedCopy(name), ['1000'], { detached: true, stdio: 'ignore' });
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

/** The host pid of the first process of `unshare`'s namespace (its sshd, once it runs). */
function namespaceInit(unshare: ChildProcess): number | undefined {
  const children = readFileSync(`/proc/${unshare.pid}/task/${unshare.pid}/children`, 'utf8').trim();
  return children ? Number(children.split(' ')[0]) : undefined;
}

/** Whether this machine has a procsnap package or command of its own (a host made from it would then have one too). */
const procsnapInstalled = spawnSync('sh', ['-c', 'command -v procsnap || dpkg-query -W procsnap'], { stdio: 'ignore' }).status === 0;

const common = () => ['-e', `procsnap_command=${join(repoRoot, 'bin/snap')}`, '-e', JSON.stringify({ procsnap_environment: { PROCSNAP_JOURNAL_DIR: journalDir } })];

beforeAll(() => {
  work = makeTempDir('snap-ansible-');
  journalDir = makeTempDir('snap-ansible-journal-');
});
afterAll(async () => {
  // SIGKILL: unshare ignores SIGTERM while it waits; its --kill-child then ends the namespace's init, and with it the rest.
  for (const n of namespaces) {
    if (n.exitCode !== null || n.signalCode !== null) continue;
    const gone = new Promise((r) => n.once('exit', r));
    process.kill(n.pid!, 'SIGKILL');
    await gone;
  }
  for (const pid of pids) await killPid(pid);
  removeTempDirs();
});

describe.skipIf(!haveTools)('ansible/capture.yml', () => {
  it('captures on three hosts over SSH at once, each its own process of the name: three bundles and one line per host', async () => {
    const key = join(work, 'client_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const name = `fleet${process.pid % 100000}`;
    const hosts = ['web1', 'web2', 'web3'];
    const ports: number[] = [];
    for (const h of hosts) ports.push(await startHost(h, `${key}.pub`, name));
    const inventory = join(work, 'inventory.yml');
    writeFileSync(
      inventory,
      JSON.stringify({
        all: {
          hosts: Object.fromEntries(
            hosts.map((h, i) => [
              h,
              {
                ansible_host: '127.0.0.1',
                ansible_port: ports[i],
                // Three hosts on one filesystem: each keeps its journal and locks apart, as separate machines do.
                procsnap_environment: { PROCSNAP_JOURNAL_DIR: makeTempDir(`snap-ansible-${h}-journal-`), PROCSNAP_LOG_DIR: makeTempDir(`snap-ansible-${h}-log-`) },
              },
            ]),
          ),
          vars: {
            ansible_user: 'root',
            ansible_ssh_private_key_file: key,
            ansible_ssh_common_args: '-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null',
            ansible_python_interpreter: '/usr/bin/python3',
            procsnap_command: join(repoRoot, 'bin/snap'),
          },
        },
      }),
    );
    const dest = join(work, 'captures');
    const summary = join(work, 'summary.txt');
    const run = playbook(['-i', inventory, '-e', `procsnap_target=${name}`, '-e', `procsnap_dest=${dest}`, '-e', 'procsnap_parallel=3', '-e', `procsnap_summary_file=${summary}`]);
    expect(run.status, run.stdout + run.stderr).toBe(0);

    const lines = readFileSync(summary, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(3);
    const pidNamespaces = new Set<string>();
    for (const host of hosts) {
      expect(existsSync(join(dest, host)), lines.join('\n')).toBe(true);
      const files = readdirSync(join(dest, host));
      expect(files, host).toHaveLength(1);
      const bundle = join(dest, host, files[0]!);
      const line = lines.find((l) => l.startsWith(`${host} `));
      // pid 2 of its host: its namespace's sshd is 1
      expect(line, host).toMatch(new RegExp(`^${host} pid 2 freeze [0-9.]+ ms ${bundle.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`));
      expect(run.stdout).toContain(`"msg": "${line}"`);
      const inspect = await runSnap(['inspect', bundle, '--json']);
      expect(inspect.exitCode, inspect.stderr).toBe(0);
      const manifest = (JSON.parse(inspect.stdout) as { manifest: { target: { comm: string }; processes: { namespaces?: { pid?: string } }[] } }).manifest;
      expect(manifest.target.comm).toBe(name);
      pidNamespaces.add(manifest.processes[0]!.namespaces!.pid!);
      const verify = await runSnap(['verify', bundle]);
      expect(verify.exitCode, verify.stderr).toBe(0);
    }
    expect(pidNamespaces.size, 'three processes, one in each host').toBe(3);
  });

  it.skipIf(procsnapInstalled)('installs the package on a host that has no procsnap (its own root), and that procsnap captures', async () => {
    const deb = ensureDeb();
    const key = join(work, 'deb_client_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const name = `fresh${process.pid % 100000}`;
    const port = await startHost('fresh1', `${key}.pub`, name, true);
    const sshd = namespaceInit(namespaces.at(-1)!);
    expect(sshd, 'the host\'s sshd').toBeDefined();
    const hostRoot = `/proc/${sshd}/root`;
    expect(existsSync(join(hostRoot, 'usr/bin/procsnap')), 'procsnap before the play').toBe(false);
    const inventory = join(work, 'fresh-inventory.yml');
    writeFileSync(
      inventory,
      JSON.stringify({
        all: {
          hosts: { fresh1: { ansible_host: '127.0.0.1', ansible_port: port } },
          vars: {
            ansible_user: 'root',
            ansible_ssh_private_key_file: key,
            ansible_ssh_common_args: '-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null',
            ansible_python_interpreter: '/usr/bin/python3',
          },
        },
      }),
    );
    const dest = join(work, 'fresh-captures');
    const run = playbook(['-i', inventory, '-e', `procsnap_target=${name}`, '-e', `procsnap_dest=${dest}`, '-e', `procsnap_deb=${deb}`]);
    expect(run.status, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/TASK \[procsnap_capture : Install it\][^\n]*\n(changed|ok): \[fresh1\]/);
    // Installed there, by dpkg, from the package: the database of that root says so; this machine's does not.
    const status = readFileSync(join(hostRoot, 'var/lib/dpkg/status'), 'utf8');
    expect(status).toMatch(/^Package: procsnap\nStatus: install ok installed$/m);
    expect(existsSync(join(hostRoot, 'usr/bin/procsnap'))).toBe(true);
    expect(existsSync('/usr/bin/procsnap'), 'this machine\'s own /usr/bin').toBe(false);
    const files = readdirSync(join(dest, 'fresh1'));
    expect(files).toHaveLength(1);
    const bundle = join(dest, 'fresh1', files[0]!);
    // The pid in the host's own namespace (its set-up took the first few).
    expect(run.stdout).toMatch(new RegExp(`"msg": "fresh1 pid \\d+ freeze [0-9.]+ ms ${bundle.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`));
    const inspect = await runSnap(['inspect', bundle, '--json']);
    expect(inspect.exitCode, inspect.stderr).toBe(0);
    const manifest = (JSON.parse(inspect.stdout) as { manifest: { target: { comm: string } } }).manifest;
    expect(manifest.target.comm).toBe(name);
  }, 600_000);

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
    expect(files[0]).toMatch(/^snap-localhost-\d{8}T\d{6}Z\.tar\.zst\.age$/);
    expect(readFileSync(bundle).subarray(0, 21).toString('latin1')).toBe('age-encryption.org/v1');
    expect(run.stdout).toContain(`"msg": "localhost pid ${pid} freeze `);
    const inspect = await runSnap(['inspect', bundle, '--identity', identity, '--json']);
    expect(inspect.exitCode, inspect.stderr).toBe(0);

    const missing = playbook(['-i', 'localhost,', '-c', 'local', '-e', 'procsnap_target=no-such-process-here', '-e', `procsnap_dest=${dest}`, ...common()]);
    expect(missing.status, missing.stdout + missing.stderr).toBe(0);
    expect(missing.stdout).toMatch(/"msg": "localhost error \(exit 3\): .*no-such-process-here/);
  });
});
