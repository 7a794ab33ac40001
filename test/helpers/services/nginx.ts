// nginx 1.22: a master and N workers in the foreground (daemon off), serving one static page; every path it writes
// (pid, logs, temp dirs) is in the private temp dir, and -e keeps even the pre-config error log out of /var/log.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  childPids,
  httpProbe,
  inServiceDir,
  launchListening,
  makeContent,
  makeTraversable,
  processUid,
  readCmdline,
  SpawnedService,
  type ServiceInit,
} from './common.js';

export interface NginxOptions {
  /** worker_processes; 2 unless told. */
  workers?: number;
  /** The `user` directive: the workers' user (the master stays root). 'root' unless told. */
  user?: 'root' | 'www-data';
  /** Size of the page at / in bytes (4 KiB unless told). */
  contentBytes?: number;
  /** Lines added to the http block (e.g. 'keepalive_timeout 5s;'). */
  httpExtra?: string[];
  /** The error_log level: 'notice' unless told. nginx's own default, 'error', logs nothing in normal operation. */
  errorLogLevel?: 'notice' | 'error';
  /** false: no access log (a log that grows after a dump makes criu refuse the restore). true unless told. */
  accessLog?: boolean;
  readyTimeoutMs?: number;
}

const workerUids = { root: 0, 'www-data': 33 } as const;

export class NginxService extends SpawnedService {
  constructor(
    init: ServiceInit,
    readonly workers: number,
    readonly user: 'root' | 'www-data',
    /** What GET / answers. */
    readonly content: string,
    readonly configPath: string,
  ) {
    super(init);
    this.extraLogs = [join(this.dir, 'error.log')];
  }

  get masterPid(): number {
    return this.pid;
  }

  /** The master's children whose title is "nginx: worker process". */
  workerPids(): number[] {
    return nginxWorkers(this.pid);
  }
}

function nginxWorkers(master: number): number[] {
  return childPids(master).filter((pid) => readCmdline(pid)?.startsWith('nginx: worker process'));
}

export function nginxConfig(dir: string, port: number, workers: number, user: string, httpExtra: string[], errorLogLevel = 'notice', accessLog = true): string {
  const tmp = join(dir, 'tmp');
  return [
    `user ${user};`, // for root: `user root;` (the group defaults to the user's name: root, www-data)
    `worker_processes ${workers};`,
    'master_process on;',
    `pid ${join(dir, 'nginx.pid')};`,
    `error_log ${join(dir, 'error.log')} ${errorLogLevel};`,
    'events { worker_connections 512; }',
    'http {',
    // No include of /etc/nginx/mime.types: nothing of the system's config.
    '  types { text/html html; text/plain txt; }',
    '  default_type application/octet-stream;',
    accessLog ? `  access_log ${join(dir, 'access.log')};` : '  access_log off;',
    `  client_body_temp_path ${join(tmp, 'client_body')};`,
    `  proxy_temp_path ${join(tmp, 'proxy')};`,
    `  fastcgi_temp_path ${join(tmp, 'fastcgi')};`,
    `  uwsgi_temp_path ${join(tmp, 'uwsgi')};`,
    `  scgi_temp_path ${join(tmp, 'scgi')};`,
    '  keepalive_requests 1000000;',
    ...httpExtra.map((line) => `  ${line}`),
    '  server {',
    `    listen 127.0.0.1:${port};`,
    '    server_name localhost;',
    `    root ${join(dir, 'www')};`,
    '    location / { index index.html; }',
    '  }',
    '}',
    '',
  ].join('\n');
}

/** ready: the master has exactly `workers` worker children running as `user`, and GET / answers 200 with the page. */
export async function startNginx(options: NginxOptions = {}): Promise<NginxService> {
  const { workers = 2, user = 'root', contentBytes = 4096, httpExtra = [], readyTimeoutMs = 15_000, errorLogLevel = 'notice', accessLog = true } = options;
  return inServiceDir('nginx', async (dir) => {
    const content = makeContent('nginx', contentBytes);
    mkdirSync(join(dir, 'www'), { mode: 0o755 });
    mkdirSync(join(dir, 'tmp'), { mode: 0o755 });
    writeFileSync(join(dir, 'www', 'index.html'), content, { mode: 0o644 });
    if (user !== 'root') makeTraversable(join(dir, 'www')); // workers as www-data must reach the page and temp dirs
    const configPath = join(dir, 'nginx.conf');
    const launched = await launchListening({
      name: 'nginx',
      dir,
      extraLogs: [join(dir, 'error.log')],
      build: (port) => {
        writeFileSync(configPath, nginxConfig(dir, port, workers, user, httpExtra, errorLogLevel, accessLog));
        return { command: 'nginx', args: ['-c', configPath, '-g', 'daemon off;', '-p', dir, '-e', join(dir, 'error.log')], cwd: dir };
      },
    });
    const seen = { last: 'nothing yet' };
    const get = httpProbe(launched.port, content, seen);
    const expectedUid = workerUids[user];
    const init: ServiceInit = {
      name: 'nginx',
      dir,
      launched,
      readyTimeoutMs,
      probe: async () => {
        const found = nginxWorkers(launched.pid);
        if (found.length !== workers) {
          seen.last = `${found.length} of ${workers} workers (${found.join(',')})`;
          return false;
        }
        const uids = found.map(processUid);
        if (!uids.every((uid) => uid === expectedUid)) {
          seen.last = `worker uids ${uids.join(',')}, expected ${expectedUid}`;
          return false;
        }
        return get();
      },
      detail: () => `last seen: ${seen.last}`,
    };
    return new NginxService(init, workers, user, content, configPath);
  });
}
