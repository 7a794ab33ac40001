// redis-server 7.0 in the foreground on 127.0.0.1:PORT, no persistence, its working dir the private temp dir.
import { Socket } from 'node:net';
import { inServiceDir, launchListening, SpawnedService } from './common.js';

export interface RedisOptions {
  /** Appended to the command line (e.g. ['--io-threads', '2']). */
  extraArgs?: string[];
  readyTimeoutMs?: number;
}

export class RedisService extends SpawnedService {}

/** One PING on a connection of its own; resolves with the first reply line. */
export function redisPing(port: number, timeoutMs = 1000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    let data = '';
    const timer = setTimeout(() => socket.destroy(new Error(`no PING reply in ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      data += chunk.toString('latin1');
      const end = data.indexOf('\r\n');
      if (end >= 0) {
        clearTimeout(timer);
        socket.destroy();
        resolve(data.slice(0, end));
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`closed before a PING reply (got ${JSON.stringify(data)})`));
    });
    socket.connect(port, '127.0.0.1', () => socket.write('PING\r\n'));
  });
}

/** ready: PING answers +PONG. */
export async function startRedis(options: RedisOptions = {}): Promise<RedisService> {
  const { extraArgs = [], readyTimeoutMs = 10_000 } = options;
  return inServiceDir('redis', async (dir) => {
    const launched = await launchListening({
      name: 'redis',
      dir,
      build: (port) => ({
        command: 'redis-server',
        // --logfile '' is stdout; --dir also holds anything redis would write (it writes nothing with these flags).
        args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no',
          '--dir', dir, '--protected-mode', 'no', '--logfile', '', ...extraArgs],
        cwd: dir,
      }),
    });
    const seen = { last: 'nothing yet' };
    return new RedisService({
      name: 'redis',
      dir,
      launched,
      readyTimeoutMs,
      probe: async () => {
        try {
          seen.last = await redisPing(launched.port);
          return seen.last === '+PONG';
        } catch (error) {
          seen.last = (error as Error).message;
          return false;
        }
      },
      detail: () => `last PING: ${seen.last}`,
    });
  });
}
