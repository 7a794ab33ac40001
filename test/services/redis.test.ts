// redis under one persistent client doing SET/GET: the dump keeps that very connection working (network unlocked,
// repair mode off), and after the original is killed, `snap restore` brings redis back with its keys.
import { afterAll, describe, expect, it } from 'vitest';
import { killTree, redisPing, startRedis, startRedisClient, stopAllServices } from '../helpers/services/index.js';
import { encodeResp, parseResp } from '../helpers/services/load.js';
import { createConnection } from 'node:net';
import { dumpService, expectDumpOk, expectTreeRunning, recordCapture, restoreBundle } from './capture.js';

afterAll(stopAllServices);

function redisGet(port: number, key: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('no reply to GET'));
    }, 5000);
    sock.on('connect', () => sock.write(encodeResp(['GET', key])));
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const parsed = parseResp(buf);
      if (parsed) {
        clearTimeout(timer);
        sock.destroy();
        resolve(parsed.reply);
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

describe('redis', () => {
  it('a persistent client connection keeps working through the dump: zero errors, zero reconnects; then kill and restore with the keys', async () => {
    const redis = await startRedis();
    await redis.ready;
    const client = await startRedisClient(redis.port);
    await client.waitForOps(200);
    const d = await dumpService('redis', redis.pid);
    const result = expectDumpOk(d);
    expect(result.criuOptions.map((c) => c.option)).toContain('--tcp-established');
    // The same connection, after the dump: hundreds more replies, all correct.
    await client.waitForOps(500, 20_000);
    const stats = await client.stop();
    expect(stats.errorMessages).toEqual([]);
    expect(stats.errors).toBe(0);
    expect(stats.reconnects).toBe(0);
    expectTreeRunning(redis.pids());
    recordCapture('redis', result, stats.maxStallMs);
    const keysAtDump = await redisGet(redis.port, 'procsnap:k:0');
    expect(keysAtDump).toMatch(/^v_\d+$/);

    // Kill the original (its files stay: the restore needs them as they were), then restore from the bundle.
    const pids = redis.pids();
    await killTree(pids, { what: 'redis' });
    const restored = await restoreBundle(d.bundle, pids);
    expect(restored.run.exitCode, `snap restore failed:\n${restored.run.stderr}`).toBe(0);
    try {
      expect(await redisPing(redis.port, 5000)).toBe('+PONG');
      // A key written before the dump is there: the restored redis holds the memory of the capture.
      expect(await redisGet(redis.port, 'procsnap:k:0')).toMatch(/^v_\d+$/);
    } finally {
      if (restored.pid) await killTree([restored.pid], { what: 'the restored redis' });
    }

    // Again with --tcp-close: the client's connection is not brought back, redis answers new ones.
    const closed = await restoreBundle(d.bundle, pids, ['--tcp-close']);
    expect(closed.run.exitCode, `snap restore --tcp-close failed:\n${closed.run.stderr}`).toBe(0);
    try {
      expect(await redisPing(redis.port, 5000)).toBe('+PONG');
      expect(await redisGet(redis.port, 'procsnap:k:0')).toMatch(/^v_\d+$/);
    } finally {
      if (closed.pid) await killTree([closed.pid], { what: 'the restored redis' });
    }
  });
});
