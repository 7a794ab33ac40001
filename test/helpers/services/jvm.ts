// test/fixtures/services/JvmServer.java on OpenJDK 17, default heap: an HTTP server with a fixed pool of 32 threads,
// so the JVM has dozens of threads. Compiled once per test file into a cache dir under os.tmpdir().
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from '../paths.js';
import { httpProbe, inServiceDir, launchListening, SpawnedService, threadCount, type ServiceInit } from './common.js';

const run = promisify(execFile);

export const jvmServerSource = join(repoRoot, 'test', 'fixtures', 'services', 'JvmServer.java');

export interface JvmOptions {
  /** ready waits for at least this many threads in /proc/PID/status (30 unless told). */
  minThreads?: number;
  bodyBytes?: number;
  /** Extra JVM options before -cp (e.g. ['-Xmx64m']). */
  jvmArgs?: string[];
  readyTimeoutMs?: number;
}

/** The same body JvmServer.body() builds. */
export function jvmServerBody(bytes = 2048): string {
  let text = 'procsnap jvm service\n';
  for (let i = 0; text.length < bytes; i++) text += `line ${i} of the jvm page\n`;
  return text.slice(0, Math.max(bytes, 21));
}

const compiled = new Map<string, Promise<string>>();

/** Compiles JvmServer.java (once per source content and TMPDIR) and returns the classpath dir. */
export function compileJvmServer(): Promise<string> {
  const source = readFileSync(jvmServerSource);
  const hash = createHash('sha256').update(source).digest('hex').slice(0, 16);
  const classDir = join(tmpdir(), `snap-jvm-classes-${hash}`);
  let promise = compiled.get(classDir);
  if (promise === undefined) {
    promise = (async () => {
      if (existsSync(join(classDir, 'JvmServer.class'))) return classDir;
      const staging = mkdtempSync(`${classDir}.tmp-`);
      try {
        await run('javac', ['-J-XX:-UsePerfData', '-d', staging, jvmServerSource], { timeout: 120_000, killSignal: 'SIGKILL' });
        renameSync(staging, classDir);
      } catch (error) {
        rmSync(staging, { recursive: true, force: true });
        const e = error as Error & { stderr?: string };
        if (existsSync(join(classDir, 'JvmServer.class'))) return classDir; // another worker won the rename
        throw new Error(`javac ${jvmServerSource} failed: ${e.stderr?.trim() || e.message}`);
      }
      return classDir;
    })();
    promise.catch(() => compiled.delete(classDir));
    compiled.set(classDir, promise);
  }
  return promise;
}

export class JvmService extends SpawnedService {
  constructor(
    init: ServiceInit,
    readonly body: string,
  ) {
    super(init);
  }

  threads(): number {
    return threadCount(this.pid);
  }
}

/** ready: GET / answers 200 with the body, and /proc/PID/status shows at least minThreads threads. */
export async function startJvm(options: JvmOptions = {}): Promise<JvmService> {
  const { minThreads = 30, bodyBytes = 2048, jvmArgs = [], readyTimeoutMs = 30_000 } = options;
  const classDir = await compileJvmServer();
  const body = jvmServerBody(bodyBytes);
  return inServiceDir('jvm', async (dir) => {
    const launched = await launchListening({
      name: 'jvm',
      dir,
      bindTimeoutMs: 30_000,
      build: (port) => ({
        command: 'java',
        // -XX:-UsePerfData: no /tmp/hsperfdata_root/PID (hotspot ignores TMPDIR for it); java.io.tmpdir in DIR.
        // nodelay: without it the JDK server's separate header and body writes meet Nagle and delayed ACKs, and a
        // keep-alive client gets one reply per 40 ms.
        args: ['-XX:-UsePerfData', `-Djava.io.tmpdir=${dir}`, '-Dsun.net.httpserver.nodelay=true', ...jvmArgs, '-cp', classDir, 'JvmServer', String(port), String(bodyBytes)],
        cwd: dir,
      }),
    });
    const seen = { last: 'nothing yet' };
    const get = httpProbe(launched.port, body, seen);
    const init: ServiceInit = {
      name: 'jvm',
      dir,
      launched,
      readyTimeoutMs,
      probe: async () => {
        if (!(await get())) return false;
        const threads = threadCount(launched.pid);
        seen.last = `GET / answered 200; ${threads} threads (want >= ${minThreads})`;
        return threads >= minThreads;
      },
      detail: () => seen.last,
    };
    return new JvmService(init, body);
  });
}
