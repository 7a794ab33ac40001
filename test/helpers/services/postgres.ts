// PostgreSQL 15: initdb into DIR/data as the postgres user, then the postmaster in the foreground as postgres on
// 127.0.0.1:PORT, its Unix socket in DIR/sock. setpriv execs, so the pid we spawn is the postmaster itself.
import { execFile } from 'node:child_process';
import { chownSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { childPids, inServiceDir, launchListening, makeTraversable, readCmdline, SpawnedService, type ServiceInit } from './common.js';

const run = promisify(execFile);

export const pgBin = '/usr/lib/postgresql/15/bin';

/** The postmaster's auxiliary processes in 15 (the stats collector is gone since 15). */
export const postgresAuxiliaries = ['checkpointer', 'background writer', 'walwriter', 'autovacuum launcher', 'logical replication launcher'] as const;

export interface PostgresOptions {
  /** -c NAME=VALUE settings (e.g. { shared_buffers: '32MB' }). */
  settings?: Record<string, string>;
  readyTimeoutMs?: number;
}

export interface PsqlOptions {
  timeoutMs?: number;
  database?: string;
}

/** The ids setpriv and chown need. */
async function postgresIds(): Promise<{ uid: number; gid: number }> {
  const [{ stdout: uid }, { stdout: gid }] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
  return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
}

const asPostgres = ['--reuid=postgres', '--regid=postgres', '--init-groups', '--'];

/** `psql -c SQL` against 127.0.0.1:port as user postgres (trust), unaligned tuples only; rejects after timeoutMs. */
export async function psqlAt(port: number, sql: string, { timeoutMs = 10_000, database = 'postgres' }: PsqlOptions = {}): Promise<string> {
  try {
    const { stdout } = await run(
      join(pgBin, 'psql'),
      ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', database, '-c', sql],
      {
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        env: { ...process.env, PGCONNECT_TIMEOUT: String(Math.max(1, Math.ceil(timeoutMs / 1000))), PGPASSFILE: '/dev/null', PGAPPNAME: 'procsnap-test' },
      },
    );
    return stdout.trim();
  } catch (error) {
    const e = error as Error & { stderr?: string; killed?: boolean };
    const why = e.killed ? `timed out after ${timeoutMs} ms` : (e.stderr?.trim() || e.message);
    throw new Error(`psql -p ${port} -c ${JSON.stringify(sql)}: ${why}`);
  }
}

export class PostgresService extends SpawnedService {
  constructor(
    init: ServiceInit,
    readonly dataDir: string,
    readonly socketDir: string,
  ) {
    super(init);
  }

  psql(sql: string, options?: PsqlOptions): Promise<string> {
    return psqlAt(this.port, sql, options);
  }

  /** The postmaster's children, by title ("checkpointer", "walwriter", "postgres postgres 127.0.0.1(…) idle"...). */
  children(): { pid: number; title: string }[] {
    return childPids(this.pid).map((pid) => ({ pid, title: (readCmdline(pid) ?? '').replace(/^postgres: /, '').trim() }));
  }
}

function missingAuxiliaries(postmaster: number): string[] {
  const titles = childPids(postmaster).map((pid) => (readCmdline(pid) ?? '').replace(/^postgres: /, '').trim());
  return postgresAuxiliaries.filter((aux) => !titles.includes(aux));
}

/** ready: `select 1` answers 1 over TCP, and the checkpointer, background writer, walwriter, autovacuum launcher and
 *  logical replication launcher are children of the postmaster. */
export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresService> {
  const { settings = {}, readyTimeoutMs = 30_000 } = options;
  return inServiceDir('postgres', async (dir) => {
    const { uid, gid } = await postgresIds();
    const dataDir = join(dir, 'data');
    const socketDir = join(dir, 'sock');
    mkdirSync(dataDir, { mode: 0o700 });
    mkdirSync(socketDir, { mode: 0o700 });
    chownSync(dataDir, uid, gid);
    chownSync(socketDir, uid, gid);
    makeTraversable(dir); // the postmaster, as postgres, must reach DIR/data through the suite's 0700 TMPDIR
    const env = { LANG: 'C', LC_ALL: 'C', HOME: dir, PGTZ: 'UTC' };
    try {
      await run(
        'setpriv',
        [...asPostgres, join(pgBin, 'initdb'), '-D', dataDir, '--auth=trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions'],
        { cwd: dir, env: { ...process.env, ...env }, timeout: 60_000, killSignal: 'SIGKILL' },
      );
    } catch (error) {
      const e = error as Error & { stderr?: string; stdout?: string };
      throw new Error(`initdb failed: ${e.stderr?.trim() || e.message} ${e.stdout?.trim() ?? ''}`);
    }
    const extra = Object.entries(settings).flatMap(([name, value]) => ['-c', `${name}=${value}`]);
    const launched = await launchListening({
      name: 'postgres',
      dir,
      bindTimeoutMs: 30_000,
      build: (port) => ({
        command: 'setpriv',
        args: [...asPostgres, join(pgBin, 'postgres'), '-D', dataDir, '-k', socketDir, '-c', 'listen_addresses=127.0.0.1', '-p', String(port), ...extra],
        cwd: dir,
        env,
      }),
    });
    const seen = { last: 'nothing yet' };
    const init: ServiceInit = {
      name: 'postgres',
      dir,
      launched,
      readyTimeoutMs,
      probe: async () => {
        try {
          const answer = await psqlAt(launched.port, 'select 1', { timeoutMs: 3000 });
          if (answer !== '1') {
            seen.last = `select 1 answered ${JSON.stringify(answer)}`;
            return false;
          }
        } catch (error) {
          seen.last = (error as Error).message;
          return false;
        }
        const missing = missingAuxiliaries(launched.pid);
        seen.last = missing.length === 0 ? 'ready' : `select 1 answered; no ${missing.join(', ')} yet`;
        return missing.length === 0;
      },
      detail: () => `last seen: ${seen.last}`,
    };
    return new PostgresService(init, dataDir, socketDir);
  });
}
