// gunicorn (Debian's) with N sync workers: a preforking master and its workers, each worker accepting on the shared
// listening socket and answering one request per connection, as a busy production tree does.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { childPids, httpProbe, inServiceDir, launchListening, makeContent, SpawnedService, type ServiceInit } from './common.js';

export interface GunicornOptions {
  workers?: number;
  readyTimeoutMs?: number;
}

export class GunicornService extends SpawnedService {
  constructor(
    init: ServiceInit,
    readonly content: string,
    readonly workers: number,
  ) {
    super(init);
  }

  /** The master's workers now. */
  workerPids(): number[] {
    return childPids(this.pid);
  }
}

/** ready: every worker is up and GET / answers 200 with the page. */
export async function startGunicorn(options: GunicornOptions = {}): Promise<GunicornService> {
  const { workers = 4, readyTimeoutMs = 60_000 } = options;
  return inServiceDir('gunicorn', async (dir) => {
    const content = makeContent('gunicorn', 2048);
    writeFileSync(join(dir, 'page.html'), content);
    writeFileSync(
      join(dir, 'app.py'),
      [
        'PAGE = open(__file__.replace("app.py", "page.html"), "rb").read()',
        'def app(environ, start_response):',
        '    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(PAGE)))])',
        '    return [PAGE]',
        '',
      ].join('\n'),
    );
    const launched = await launchListening({
      name: 'gunicorn',
      dir,
      bindTimeoutMs: 60_000,
      build: (port) => ({
        command: '/usr/bin/python3',
        args: ['-m', 'gunicorn', '--workers', String(workers), '--worker-class', 'sync', '--bind', `127.0.0.1:${port}`, '--chdir', dir, '--timeout', '120', 'app:app'],
        cwd: dir,
        env: { PYTHONDONTWRITEBYTECODE: '1', PYTHONUNBUFFERED: '1' },
      }),
    });
    const seen = { last: 'nothing yet' };
    const http = httpProbe(launched.port, content, seen);
    const init: ServiceInit = {
      name: 'gunicorn',
      dir,
      launched,
      readyTimeoutMs,
      // All workers forked and the page served: a dump of a half-started tree is not the case under test.
      probe: async () => childPids(launched.pid).length >= workers && (await http()),
      detail: () => `${childPids(launched.pid).length}/${workers} workers; ${seen.last}`,
    };
    return new GunicornService(init, content, workers);
  });
}
