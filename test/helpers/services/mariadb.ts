// MariaDB from Debian: mariadb-install-db into DIR/data, then mariadbd in the foreground on 127.0.0.1:PORT with the
// package's compiled-in defaults (InnoDB on io_uring, the buffer pool's 8 TiB reservation); no config file is read,
// so the host's /etc/mysql plays no part. Started as root, mariadbd drops to the mysql user itself (--user=mysql), as
// Debian's unit runs it: the pid we spawn is the server. root@127.0.0.1 has an empty password, for the test clients.
import { execFile } from 'node:child_process';
import { chownSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { inServiceDir, launchListening, makeTraversable, SpawnedService, type ServiceInit } from './common.js';

const run = promisify(execFile);

export interface MariaDbOptions {
  /** --NAME=VALUE settings on mariadbd's command line (e.g. { 'innodb-use-native-aio': '0' }). */
  settings?: Record<string, string>;
  readyTimeoutMs?: number;
}

/** `mariadb -e SQL` against 127.0.0.1:port as root (empty password), tab-separated rows without headers; rejects
 *  after timeoutMs. */
export async function mariadbAt(port: number, sql: string, timeoutMs = 10_000): Promise<string> {
  try {
    const { stdout } = await run(
      'mariadb',
      ['--no-defaults', '-h', '127.0.0.1', '-P', String(port), '-u', 'root', '--batch', '--skip-column-names',
        `--connect-timeout=${Math.max(1, Math.ceil(timeoutMs / 1000))}`, '-e', sql],
      { timeout: timeoutMs, killSignal: 'SIGKILL' },
    );
    return stdout.trim();
  } catch (error) {
    const e = error as Error & { stderr?: string; killed?: boolean };
    const why = e.killed ? `timed out after ${timeoutMs} ms` : (e.stderr?.trim() || e.message);
    throw new Error(`mariadb -P ${port} -e ${JSON.stringify(sql)}: ${why}`);
  }
}

export class MariaDbService extends SpawnedService {
  constructor(
    init: ServiceInit,
    readonly dataDir: string,
  ) {
    super(init);
  }

  sql(statement: string, timeoutMs?: number): Promise<string> {
    return mariadbAt(this.port, statement, timeoutMs);
  }
}

/** ready: `select 1` answers 1 over TCP. */
export async function startMariaDb(options: MariaDbOptions = {}): Promise<MariaDbService> {
  const { settings = {}, readyTimeoutMs = 60_000 } = options;
  return inServiceDir('mariadb', async (dir) => {
    const [{ stdout: uid }, { stdout: gid }] = await Promise.all([run('id', ['-u', 'mysql']), run('id', ['-g', 'mysql'])]);
    const dataDir = join(dir, 'data');
    const runDir = join(dir, 'run'); // its Unix socket and pid file: mysql must create them
    const tmpDir = join(dir, 'tmp'); // InnoDB's temporary files: the suite's TMPDIR is not the mysql user's to write
    for (const d of [dataDir, runDir, tmpDir]) {
      mkdirSync(d, { mode: 0o700 });
      chownSync(d, Number(uid.trim()), Number(gid.trim()));
    }
    makeTraversable(dir); // mariadbd, as mysql, must reach DIR/data through the suite's 0700 TMPDIR
    try {
      await run(
        'mariadb-install-db',
        ['--no-defaults', `--datadir=${dataDir}`, '--user=mysql', '--auth-root-authentication-method=normal', '--skip-test-db'],
        { cwd: dir, env: { ...process.env, TMPDIR: tmpDir }, timeout: 120_000, killSignal: 'SIGKILL' },
      );
    } catch (error) {
      const e = error as Error & { stderr?: string; stdout?: string };
      throw new Error(`mariadb-install-db failed: ${e.stderr?.trim() || e.message} ${e.stdout?.trim() ?? ''}`);
    }
    const extra = Object.entries(settings).map(([name, value]) => `--${name}=${value}`);
    const launched = await launchListening({
      name: 'mariadb',
      dir,
      bindTimeoutMs: 60_000,
      build: (port) => ({
        command: '/usr/sbin/mariadbd',
        args: ['--no-defaults', `--datadir=${dataDir}`, '--user=mysql', '--bind-address=127.0.0.1', `--port=${port}`,
          `--socket=${join(runDir, 'sock')}`, `--pid-file=${join(runDir, 'pid')}`, `--tmpdir=${tmpDir}`, ...extra],
        cwd: dir,
      }),
    });
    const seen = { last: 'nothing yet' };
    const init: ServiceInit = {
      name: 'mariadb',
      dir,
      launched,
      readyTimeoutMs,
      probe: async () => {
        try {
          seen.last = await mariadbAt(launched.port, 'select 1', 3000);
          return seen.last === '1';
        } catch (error) {
          seen.last = (error as Error).message;
          return false;
        }
      },
      detail: () => `last seen: ${seen.last}`,
    };
    return new MariaDbService(init, dataDir);
  });
}
