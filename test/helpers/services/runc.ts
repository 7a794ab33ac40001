// A runc 1.1 container: a busybox-static rootfs, config.json from `runc spec` with no terminal, a writable root and,
// as its process, a shell loop that bumps a counter in /count (DIR/bundle/rootfs/count from the host) every tickMs
// without forking (read -t on a fifo is its sleep). The container has its own network namespace, so it listens on
// nothing the host could reach: port is 0. runc's state (--root) is in DIR too.
import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import {
  describePid,
  inServiceDir,
  killTree,
  onProcessExit,
  processTree,
  registerService,
  spawnDetached,
  tailOf,
  unregisterService,
  type ServiceHandle,
} from './common.js';
import { processExists, readProcFile, waitFor } from '../target.js';

const run = promisify(execFile);

export const busyboxPath = '/bin/busybox';

export interface RuncOptions {
  /** The counter's period in ms (50 unless told). */
  tickMs?: number;
  readyTimeoutMs?: number;
  /** Leave the container's stdio as runc gave it, the host's DIR/stdout.log and DIR/stderr.log (as `runc run -d
   *  >log` does), instead of the container's own /dev/null. */
  hostStdio?: boolean;
}

interface RuncState {
  status: string;
  pid: number;
}

export class RuncService implements ServiceHandle {
  readonly name = 'runc';
  readonly port = 0;
  readonly ready: Promise<void>;
  private stopping: Promise<void> | undefined;
  private readonly forgetLastResort: () => void;

  constructor(
    /** The container's init as seen from the host (runc's --pid-file). */
    readonly pid: number,
    readonly id: string,
    readonly dir: string,
    readonly bundleDir: string,
    /** runc --root: the state dir of this container. */
    readonly stateDir: string,
    readReady: (service: RuncService) => Promise<void>,
  ) {
    this.forgetLastResort = onProcessExit(() => {
      for (const p of this.pids()) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // gone
        }
      }
    });
    registerService(this);
    this.ready = readReady(this);
    this.ready.catch(() => undefined);
  }

  get rootfs(): string {
    return join(this.bundleDir, 'rootfs');
  }

  /** The host file runc gave the container as its stdout (its stdio stay there with hostStdio). */
  get stdoutPath(): string {
    return join(this.dir, 'stdout.log');
  }

  /** Host path of the counter the container writes. */
  get counterPath(): string {
    return join(this.rootfs, 'count');
  }

  /** The counter's value; undefined until the container has written it. */
  readCounter(): number | undefined {
    // The loop writes in place (1<>, no truncation) and the number only grows, so a read sees a whole number; a
    // read that raced the very first write is simply retried.
    for (let attempt = 0; attempt < 5; attempt++) {
      const text = readProcFile(this.counterPath)?.trim();
      if (text !== undefined && /^\d+$/.test(text)) return Number(text);
    }
    return undefined;
  }

  /** Waits until the counter has advanced by `ticks` past its value now; resolves with the new value. */
  async waitForCounter(ticks = 1, timeoutMs = 10_000): Promise<number> {
    const start = this.readCounter() ?? 0;
    return waitFor(
      () => {
        const count = this.readCounter();
        return count !== undefined && count >= start + ticks && count;
      },
      { what: `container ${this.id} counter to pass ${start + ticks}`, timeoutMs, detail: () => `counter ${this.readCounter()}; ${describePid(this.pid)}` },
    );
  }

  /** True while `pid` holds this container's init: a live process in the container's cgroup (runc names it after
   *  the id). /proc/PID/root is no help: from the host it reads "/" after the container's pivot_root. */
  holdsPid(): boolean {
    if (!processExists(this.pid)) return false;
    const cgroups = readProcFile(`/proc/${this.pid}/cgroup`) ?? '';
    return cgroups.split('\n').some((line) => line.endsWith(`/${this.id}`));
  }

  pids(): number[] {
    return this.holdsPid() ? processTree(this.pid) : [];
  }

  logTail(lines = 15): string {
    return ['stdout.log', 'stderr.log'].map((f) => tailOf(join(this.dir, f), lines)).filter((t) => t !== '').join('\n');
  }

  /** Runs `runc --root STATE ARGS...`, bounded. */
  async runc(args: string[], timeoutMs = 15_000): Promise<string> {
    return runcAt(this.stateDir, args, timeoutMs);
  }

  async state(): Promise<RuncState | undefined> {
    try {
      return JSON.parse(await this.runc(['state', this.id], 5000)) as RuncState;
    } catch {
      return undefined;
    }
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    try {
      const tree = this.pids();
      // A paused container (cgroup freezer) would hold SIGKILL until thawed.
      if ((await this.state())?.status === 'paused') await this.runc(['resume', this.id]).catch(() => undefined);
      await this.runc(['kill', this.id, 'KILL']).catch(() => undefined);
      await killTree(tree, { what: `runc container ${this.id} (init ${this.pid})` });
      await this.runc(['delete', '-f', this.id]).catch(async (error: Error) => {
        if ((await this.state()) !== undefined) throw new Error(`runc delete -f ${this.id}: ${error.message}`);
      });
    } finally {
      this.forgetLastResort();
      rmSync(this.dir, { recursive: true, force: true });
      unregisterService(this);
    }
  }
}

async function runcAt(stateDir: string, args: string[], timeoutMs: number): Promise<string> {
  try {
    const { stdout } = await run('runc', ['--root', stateDir, ...args], { timeout: timeoutMs, killSignal: 'SIGKILL' });
    return stdout;
  } catch (error) {
    const e = error as Error & { stderr?: string; killed?: boolean };
    throw new Error(`runc ${args.join(' ')}: ${e.killed ? `timed out after ${timeoutMs} ms` : e.stderr?.trim() || e.message}`);
  }
}

/** A busybox rootfs: /bin/busybox and a link for each of its applets. */
async function makeRootfs(rootfs: string): Promise<void> {
  mkdirSync(join(rootfs, 'bin'), { recursive: true });
  for (const d of ['proc', 'dev', 'sys', 'tmp', 'etc']) mkdirSync(join(rootfs, d), { recursive: true });
  chmodSync(join(rootfs, 'tmp'), 0o1777);
  copyFileSync(busyboxPath, join(rootfs, 'bin', 'busybox'));
  chmodSync(join(rootfs, 'bin', 'busybox'), 0o755);
  const { stdout } = await run(busyboxPath, ['--list'], { timeout: 10_000 });
  for (const applet of stdout.split('\n').map((s) => s.trim())) {
    if (applet === '' || applet === 'busybox' || applet.includes('/')) continue;
    symlinkSync('busybox', join(rootfs, 'bin', applet));
  }
  writeFileSync(join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/:/bin/sh\n');
  writeFileSync(join(rootfs, 'etc', 'group'), 'root:x:0:\n');
}

/** The counter loop: no fork per tick (`read -t` on a fifo held open read-write is the sleep), so the container's
 *  tree is just its init. */
export function counterScript(tickMs: number, hostStdio = false): string {
  const seconds = (tickMs / 1000).toFixed(3);
  return [
    // The container's own /dev/null, as a runtime's shim gives a container pipes: runc's stdio here are the host's log
    // files, which a checkpoint from the host cannot carry (criu finds no mount for them in the container).
    ...(hostStdio ? [] : ['exec </dev/null >/dev/null 2>&1']),
    'mkfifo /tick && exec 3<>/tick && rm -f /tick',
    'i=0',
    // 1<> opens without truncating: the host never reads an empty file.
    `while :; do i=$((i+1)); echo $i 1<>/count; read -t ${seconds} x <&3; done`,
  ].join('\n');
}

/** ready: runc run -d has exited 0, the pid file names a live process, `runc state` says running, and the counter
 *  has advanced twice. */
export async function startRuncContainer(options: RuncOptions = {}): Promise<RuncService> {
  const { tickMs = 50, readyTimeoutMs = 20_000, hostStdio = false } = options;
  return inServiceDir('runc', async (dir) => {
    const id = `procsnap-${basename(dir).replace(/[^A-Za-z0-9_.-]/g, '')}`;
    const bundleDir = join(dir, 'bundle');
    const stateDir = join(dir, 'runc-state');
    const pidFile = join(dir, 'container.pid');
    mkdirSync(bundleDir);
    mkdirSync(stateDir, { mode: 0o700 });
    await makeRootfs(join(bundleDir, 'rootfs'));
    await run('runc', ['spec', '--bundle', bundleDir], { timeout: 10_000 });
    const configPath = join(bundleDir, 'config.json');
    const config = JSON.parse(readFileSync(configPath, 'utf8')) as {
      process: { terminal: boolean; args: string[]; cwd: string };
      root: { path: string; readonly: boolean };
      hostname?: string;
    };
    config.process.terminal = false;
    config.process.args = ['/bin/sh', '-c', counterScript(tickMs, hostStdio)];
    config.process.cwd = '/';
    config.root.readonly = false;
    config.hostname = id.slice(0, 63);
    writeFileSync(configPath, JSON.stringify(config, null, 2));

    // runc run -d: runc starts the container and exits; the container's stdio are runc's (our log files), stdin
    // /dev/null. Detached, so runc (and the init it leaves behind) are in a session of their own.
    const runner = await spawnDetached(
      { command: 'runc', args: ['--root', stateDir, 'run', '--detach', '--pid-file', pidFile, '--bundle', bundleDir, id], cwd: dir },
      join(dir, 'stdout.log'),
      join(dir, 'stderr.log'),
    );
    const logs = (): string => ['stdout.log', 'stderr.log'].map((f) => tailOf(join(dir, f), 15)).filter((t) => t !== '').join('\n');
    let exit;
    try {
      exit = await waitFor(() => runner.exitStatus(), {
        what: `runc run -d ${id} to exit`,
        timeoutMs: 30_000,
        detail: () => `${describePid(runner.pid)}; log: ${logs() || '(empty)'}`,
      });
    } catch (error) {
      await killTree(processTree(runner.pid), { what: 'runc run' }).catch(() => undefined);
      await runcAt(stateDir, ['delete', '-f', id], 10_000).catch(() => undefined);
      throw error;
    }
    const pidText = readProcFile(pidFile)?.trim();
    if (exit.code !== 0 || pidText === undefined || !/^\d+$/.test(pidText)) {
      await runcAt(stateDir, ['delete', '-f', id], 10_000).catch(() => undefined);
      throw new Error(`runc run -d ${id} exited with code ${exit.code}, signal ${exit.signal}, pid file ${JSON.stringify(pidText)}: ${logs() || '(no output)'}`);
    }
    const pid = Number(pidText);
    const seen = { last: 'nothing yet' };
    return new RuncService(pid, id, dir, bundleDir, stateDir, async (service) => {
      let first: number | undefined;
      await waitFor(
        async () => {
          if (!processExists(pid)) throw new Error(`container ${id} init ${pid} is gone: ${service.logTail()}`);
          const state = await service.state();
          if (state?.status !== 'running') {
            seen.last = `runc state: ${state?.status ?? 'unknown'}`;
            return false;
          }
          const count = service.readCounter();
          seen.last = `counter ${count}`;
          if (count === undefined) return false;
          first ??= count;
          return count >= first + 2;
        },
        { what: `runc container ${id} (init ${pid}) to be ready`, timeoutMs: readyTimeoutMs, intervalMs: 25, detail: () => `${seen.last}; ${describePid(pid)}` },
      );
    });
  });
}
