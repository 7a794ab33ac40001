// A copy is not the original: `restore --isolate` of a capture while the original still runs. The original keeps every
// client (counted on its own side), the copy answers only on the published port, cannot reach a port on the host, and
// `copies --end` leaves nothing of it.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { runSnap } from '../helpers/cli.js';
import { encodeResp, freePort, httpGet, parseResp, startHttpLoad, startPython, startRedis, startRedisClient, stopAllServices, type RespValue } from '../helpers/services/index.js';
import { processExists } from '../helpers/target.js';
import { dumpService, expectDumpOk, expectTreeRunning, snapEnv } from './capture.js';

const execFileAsync = promisify(execFile);

interface Isolated {
  pid: number;
  isolated: { published: { host: string; port: number }[]; enter: string; end: string };
}

/** Every live process of the copy: the restored root, criu (init of its pid namespace), unshare, the forwarders. */
function copyProcesses(copy: number): number[] {
  const criu = Number(/^\d+ \(.*\) \S (\d+)/.exec(readFileSync(`/proc/${copy}/stat`, 'utf8'))?.[1]);
  const unshare = Number(/^\d+ \(.*\) \S (\d+)/.exec(readFileSync(`/proc/${criu}/stat`, 'utf8'))?.[1]);
  const forwarders = readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes(String(copy)) && readlinkSync(`/proc/${p}/exe`).includes('python');
      } catch {
        return false;
      }
    });
  return [copy, criu, unshare, ...forwarders];
}

const alive = (pid: number) => processExists(pid) && !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));

/** Whether a TCP connect from inside the copy's network namespace to 127.0.0.1:port, or to the host's own address, succeeds. */
async function copyCanConnect(copy: number, host: string, port: number): Promise<string> {
  const script = `import socket,sys\ntry:\n  socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print('connected')\nexcept OSError as e:\n  print('refused', e.errno)`;
  const { stdout } = await execFileAsync('nsenter', ['--target', String(copy), '--net', '--', '/usr/bin/python3', '-c', script, host, String(port)]);
  return stdout.trim();
}

/** An address of this host that is not loopback, if it has one. */
function hostAddress(): string | undefined {
  const text = readFileSync('/proc/net/fib_trie', 'utf8');
  const locals = [...text.matchAll(/\|-- (\d+\.\d+\.\d+\.\d+)\n\s+\/32 host LOCAL/g)].map((m) => m[1]!);
  return locals.find((a) => !a.startsWith('127.'));
}

/** A port listening on the host's 127.0.0.1 (and every address): what the copy must not reach. */
async function hostListener(): Promise<{ port: number; close: () => void }> {
  const server = createServer((s) => s.end());
  await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
  return { port: (server.address() as AddressInfo).port, close: () => server.close() };
}

async function endCopy(copy: number, processes: number[]): Promise<void> {
  const ended = await runSnap(['copies', '--end', String(copy)], { env: snapEnv() });
  expect(ended.exitCode, ended.stderr).toBe(0);
  for (const p of processes) expect(alive(p), `process ${p} of the copy`).toBe(false);
  const listed = await runSnap(['copies', '--json'], { env: snapEnv() });
  expect(JSON.parse(listed.stdout)).toEqual({ copies: [] });
  for (const base of ['/sys/fs/cgroup', '/sys/fs/cgroup/memory', '/sys/fs/cgroup/cpu'])
    if (existsSync(base)) expect(readdirSync(base).filter((n) => n.startsWith(`procsnap-copy-${copy}-`))).toEqual([]);
}

afterAll(stopAllServices);

describe('restore --isolate beside the running original', () => {
  it('python http.server: the original answers all of its clients, the copy only on the published port, and cannot reach the host', async () => {
    const py = await startPython();
    await py.ready;
    const load = startHttpLoad(py.port, { concurrency: 2, keepAlive: false });
    await load.waitForRequests(20);
    const d = await dumpService('python', py.pid);
    expectDumpOk(d);

    // Plain --new-pidns here would answer the original's clients: refused, naming --isolate.
    const plain = await runSnap(['restore', d.bundle, '--allow-unsigned', '--new-pidns'], { env: snapEnv() });
    expect(plain.exitCode, plain.stderr).toBe(12);
    expect(plain.stderr).toContain('--isolate');

    const published = await freePort();
    const run = await runSnap(['restore', d.bundle, '--allow-unsigned', '--json', '--isolate', '--publish', `${published}:${py.port}`, '--memory', '256M', '--cpu', '0.5'], {
      env: snapEnv(),
      timeoutMs: 300_000,
    });
    expect(run.exitCode, run.stderr).toBe(0);
    const copy = (JSON.parse(run.stdout) as Isolated).pid;
    const processes = copyProcesses(copy);
    try {
      // The original logs every request it answers to its own stderr.log; the copy has a private one.
      const log = join(py.dir, 'stderr.log');
      for (let i = 0; i < 20; i++) expect((await httpGet(py.port, `/original-${i}`, 5000)).status).toBe(404);
      for (let i = 0; i < 20; i++) expect((await httpGet(published, `/copy-${i}`, 5000)).status).toBe(404);
      expect((await httpGet(published, '/', 5000)).status).toBe(200);
      const original = readFileSync(log, 'utf8');
      expect(Array.from({ length: 20 }, (_, i) => original.includes(`GET /original-${i} `))).toEqual(Array(20).fill(true));
      expect(original).not.toContain('GET /copy-');
      const stats = await load.stop();
      expect(stats.failed).toBe(0);
      expect(stats.errors).toEqual([]);
      expectTreeRunning(py.pids());
      // Sealed off: no port of the host, on loopback or on the host's own address; the host itself reaches it.
      const host = await hostListener();
      try {
        expect(await copyCanConnect(copy, '127.0.0.1', host.port)).toMatch(/^refused/);
        const address = hostAddress();
        if (address) expect(await copyCanConnect(copy, address, host.port)).toMatch(/^refused/);
      } finally {
        host.close();
      }
      // Capped: its memory cgroup (v1 here; cgroup v2 hosts get memory.max) holds its processes under the limit asked.
      const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
      const base = v2 ? '/sys/fs/cgroup' : '/sys/fs/cgroup/memory';
      const cgroup = readdirSync(base).find((n) => n.startsWith(`procsnap-copy-${copy}-`));
      expect(cgroup).toBeDefined();
      expect(readFileSync(join(base, cgroup!, v2 ? 'memory.max' : 'memory.limit_in_bytes'), 'utf8').trim()).toBe(String(256 * 1024 * 1024));
      expect(readFileSync(join(base, cgroup!, 'cgroup.procs'), 'utf8').split('\n')).toContain(String(copy));
    } finally {
      await load.stop();
      await endCopy(copy, processes);
    }
    expect(existsSync(`/proc/${py.pid}`)).toBe(true);
    expect((await httpGet(py.port, '/', 5000)).status).toBe(200);
  });

  it('redis with a persistent client: the client stays with the original; the copy holds the data of the dump and answers on the published port', async () => {
    const redis = await startRedis();
    await redis.ready;
    const client = await startRedisClient(redis.port);
    await client.waitForOps(50);
    await redisCommand(redis.port, ['SET', 'procsnap:marker', 'before-dump']);
    const d = await dumpService('redis', redis.pid);
    expectDumpOk(d);
    await redisCommand(redis.port, ['SET', 'procsnap:marker', 'after-dump']);

    const published = await freePort();
    const run = await runSnap(['restore', d.bundle, '--allow-unsigned', '--json', '--isolate', '--publish', `${published}:${redis.port}`], { env: snapEnv(), timeoutMs: 300_000 });
    expect(run.exitCode, run.stderr).toBe(0);
    const copy = (JSON.parse(run.stdout) as Isolated).pid;
    const processes = copyProcesses(copy);
    try {
      const before = client.stats().ops;
      await client.waitForOps(200);
      const stats = await client.stop();
      // Every reply of the persistent connection was right, after the restore too: it is still the original's.
      expect(stats.errors).toBe(0);
      expect(stats.ops).toBeGreaterThanOrEqual(before + 200);
      expect(await redisCommand(redis.port, ['GET', 'procsnap:marker'])).toBe('after-dump');
      // The copy: the data as dumped, on the published port only; what is written there stays there.
      expect(await redisCommand(published, ['GET', 'procsnap:marker'])).toBe('before-dump');
      expect(await redisCommand(published, ['SET', 'procsnap:copy-only', '1'])).toBe('OK');
      expect(await redisCommand(redis.port, ['GET', 'procsnap:copy-only'])).toBeNull();
      // Its clients came back closed: the copy has no connection to anyone.
      const clients = String(await redisCommand(published, ['CLIENT', 'LIST'])).trim().split('\n');
      expect(clients).toHaveLength(1);
      const host = await hostListener();
      try {
        expect(await copyCanConnect(copy, '127.0.0.1', host.port)).toMatch(/^refused/);
      } finally {
        host.close();
      }
    } finally {
      await endCopy(copy, processes);
    }
    expect(await redisCommand(redis.port, ['PING'])).toBe('PONG');
  });
});

/** One command on a connection of its own; resolves with its reply. */
function redisCommand(port: number, args: string[]): Promise<RespValue> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(encodeResp(args)));
    let data = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(new Error(`no reply to ${args[0]} in 5 s`)), 5000);
    socket.on('data', (c: Buffer) => {
      data = Buffer.concat([data, c]);
      const parsed = parseResp(data);
      if (parsed) {
        clearTimeout(timer);
        socket.destroy();
        resolve(parsed.reply);
      }
    });
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}
