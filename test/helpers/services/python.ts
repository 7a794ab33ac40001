// python3 -m http.server (ThreadingHTTPServer, HTTP/1.0: one request per connection) serving DIR/www.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { httpProbe, inServiceDir, launchListening, makeContent, SpawnedService, type ServiceInit } from './common.js';

/** The system's python, not a pyenv shim (a shim would be a shell script, its pid not the server's). */
export const python3 = '/usr/bin/python3';

export interface PythonOptions {
  contentBytes?: number;
  readyTimeoutMs?: number;
}

export class PythonService extends SpawnedService {
  constructor(
    init: ServiceInit,
    /** What GET / answers (DIR/www/index.html). */
    readonly content: string,
  ) {
    super(init);
  }
}

/** ready: GET / answers 200 with the page. */
export async function startPython(options: PythonOptions = {}): Promise<PythonService> {
  const { contentBytes = 4096, readyTimeoutMs = 10_000 } = options;
  return inServiceDir('python', async (dir) => {
    const content = makeContent('python', contentBytes);
    mkdirSync(join(dir, 'www'));
    writeFileSync(join(dir, 'www', 'index.html'), content);
    const launched = await launchListening({
      name: 'python',
      dir,
      build: (port) => ({
        command: python3,
        args: ['-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', join(dir, 'www')],
        cwd: dir,
        env: { PYTHONDONTWRITEBYTECODE: '1', PYTHONUNBUFFERED: '1' },
      }),
    });
    const seen = { last: 'nothing yet' };
    const init: ServiceInit = { name: 'python', dir, launched, readyTimeoutMs, probe: httpProbe(launched.port, content, seen), detail: () => seen.last };
    return new PythonService(init, content);
  });
}
