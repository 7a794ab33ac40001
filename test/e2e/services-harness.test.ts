// The service harness (test/helpers/services/) itself: each real service starts on 127.0.0.1 in a session of its own,
// is ready only once it answers, takes a second of client load without a single failure, has the process tree the
// capture tests expect, and stop() leaves no pid alive and no temp dir behind.
import { existsSync, readlinkSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import {
  openIdleConnections,
  postgresAuxiliaries,
  processUid,
  readCmdline,
  startHttpLoad,
  startJvm,
  startNginx,
  startNodeServer,
  startPostgres,
  startPostgresClient,
  startPython,
  startRedis,
  startRedisClient,
  startRuncContainer,
  stopAllServices,
  type HttpLoadOptions,
  type HttpLoadStats,
  type ServiceHandle,
} from '../helpers/services/index.js';
import { processExists, readProcStat, waitFor } from '../helpers/target.js';

afterAll(stopAllServices);

const loadMs = 1000;

/** Start, ready, load and stop times of one service, printed so a slow service shows in the log. */
class Timings {
  private readonly started = performance.now();
  private last = this.started;
  private readonly parts: string[] = [];
  constructor(private readonly name: string) {}
  mark(what: string): void {
    const now = performance.now();
    this.parts.push(`${what} ${Math.round(now - this.last)} ms`);
    this.last = now;
  }
  print(): void {
    console.log(`${this.name}: ${this.parts.join(', ')}; total ${Math.round(performance.now() - this.started)} ms`);
  }
}

function expectSessionLeader(service: ServiceHandle): void {
  const stat = readProcStat(service.pid);
  expect(stat, `${service.name} pid ${service.pid}`).toBeDefined();
  expect(stat!.session, `${service.name} is a session leader`).toBe(service.pid);
  expect(stat!.pgrp, `${service.name} leads its process group`).toBe(service.pid);
  expect(readlinkSync(`/proc/${service.pid}/fd/0`), `${service.name} stdin`).toBe('/dev/null');
}

async function expectCleanStop(service: ServiceHandle, timings: Timings): Promise<void> {
  const pids = service.pids();
  expect(pids[0]).toBe(service.pid);
  await service.stop();
  timings.mark('stop');
  expect(pids.filter((pid) => processExists(pid)), `${service.name} pids still there after stop()`).toEqual([]);
  expect(existsSync(service.dir), `${service.name} dir ${service.dir} removed`).toBe(false);
}

async function httpLoadFor(port: number, options: HttpLoadOptions): Promise<HttpLoadStats> {
  const load = startHttpLoad(port, options);
  await sleep(loadMs);
  const stats = await load.stop();
  expect(stats.ok, 'requests answered').toBeGreaterThan(0);
  expect(stats.failed, stats.errors.join('; ')).toBe(0);
  return stats;
}

describe('service harness', () => {
  it('redis: ready on PING, one persistent client does SET/GET for a second without an error', async () => {
    const t = new Timings('redis');
    const redis = await startRedis();
    await redis.ready;
    t.mark('ready');
    expectSessionLeader(redis);
    expect(readCmdline(redis.pid)).toMatch(new RegExp(`^redis-server 127\\.0\\.0\\.1:${redis.port}`));
    const client = await startRedisClient(redis.port);
    await sleep(loadMs);
    const stats = await client.stop();
    t.mark(`load (${stats.ops} ops, max stall ${stats.maxStallMs.toFixed(1)} ms)`);
    expect(stats.ops).toBeGreaterThan(0);
    expect(stats.errors, stats.errorMessages.join('; ')).toBe(0);
    expect(stats.reconnects).toBe(0);
    await expectCleanStop(redis, t);
    t.print();
  });

  it('nginx (user root): a master and 2 workers, 200 with the page under keep-alive load', async () => {
    const t = new Timings('nginx root');
    const nginx = await startNginx({ workers: 2, user: 'root' });
    await nginx.ready;
    t.mark('ready');
    expectSessionLeader(nginx);
    const workers = nginx.workerPids();
    expect(workers).toHaveLength(2);
    expect(nginx.pids().sort()).toEqual([nginx.pid, ...workers].sort());
    expect(workers.map(processUid)).toEqual([0, 0]);
    const stats = await httpLoadFor(nginx.port, { concurrency: 4, keepAlive: true, expectBody: nginx.content });
    t.mark(`load (${stats.ok} ok, max stall ${stats.maxStallMs.toFixed(1)} ms)`);
    expect(nginx.workerPids().sort(), 'no worker died and was replaced').toEqual(workers.sort());
    await expectCleanStop(nginx, t);
    t.print();
  });

  it('nginx (user www-data): workers as www-data, a new connection per request, idle connections held open', async () => {
    const t = new Timings('nginx www-data');
    const nginx = await startNginx({ workers: 2, user: 'www-data' });
    await nginx.ready;
    t.mark('ready');
    expect(processUid(nginx.pid), 'the master stays root').toBe(0);
    expect(nginx.workerPids().map(processUid)).toEqual([33, 33]);
    const idle = await openIdleConnections(nginx.port, 6);
    const stats = await httpLoadFor(nginx.port, { concurrency: 2, keepAlive: false, expectBody: nginx.content });
    t.mark(`load (${stats.ok} ok, max stall ${stats.maxStallMs.toFixed(1)} ms)`);
    expect(idle.closedByServer(), 'nginx keeps idle and partial connections open for a second').toBe(0);
    await idle.close();
    await expectCleanStop(nginx, t);
    t.print();
  });

  it('nginx: stop() after the master died still kills the orphaned workers (found through the session)', async () => {
    const t = new Timings('nginx orphans');
    const nginx = await startNginx({ workers: 2 });
    await nginx.ready;
    const workers = nginx.workerPids();
    process.kill(nginx.pid, 'SIGKILL');
    await waitFor(() => nginx.exitStatus() !== undefined, { what: 'the nginx master to be reaped' });
    expect(workers.filter((pid) => processExists(pid)), 'the workers outlive their master').toEqual(workers);
    expect(nginx.pids(), 'no tree under a dead master').toEqual([]);
    await nginx.stop();
    t.mark('stop');
    expect(workers.filter((pid) => processExists(pid))).toEqual([]);
    t.print();
  });

  it('postgres: the postmaster itself (as postgres) with its auxiliary children, select 1 and a query loop', async () => {
    const t = new Timings('postgres');
    const pg = await startPostgres();
    t.mark('initdb and bind');
    await pg.ready;
    t.mark('ready');
    expectSessionLeader(pg);
    expect(readlinkSync(`/proc/${pg.pid}/exe`), 'the pid is the postmaster, not a setpriv/runuser wrapper').toBe('/usr/lib/postgresql/15/bin/postgres');
    expect(processUid(pg.pid)).not.toBe(0);
    expect(await pg.psql('select current_user')).toBe('postgres');
    const titles = pg.children().map((c) => c.title);
    for (const aux of postgresAuxiliaries) expect(titles, `postmaster child "${aux}"`).toContain(aux);
    const client = await startPostgresClient(pg.port);
    await sleep(loadMs);
    const stats = await client.stop();
    t.mark(`load (${stats.ops} queries, max stall ${stats.maxStallMs.toFixed(1)} ms)`);
    expect(stats.ops).toBeGreaterThan(0);
    expect(stats.errors, stats.errorMessages.join('; ')).toBe(0);
    await expectCleanStop(pg, t);
    t.print();
  });

  it('python http.server: 200 with the page, one connection per request (HTTP/1.0)', async () => {
    const t = new Timings('python');
    const python = await startPython();
    await python.ready;
    t.mark('ready');
    expectSessionLeader(python);
    expect(readlinkSync(`/proc/${python.pid}/exe`)).toMatch(/^\/usr\/bin\/python3/);
    const stats = await httpLoadFor(python.port, { concurrency: 2, keepAlive: false, expectBody: python.content });
    t.mark(`load (${stats.ok} ok, max stall ${stats.maxStallMs.toFixed(1)} ms)`);
    await expectCleanStop(python, t);
    t.print();
  });

  it('node server: 200 with the body under keep-alive load beside idle connections', async () => {
    const t = new Timings('node');
    const node = await startNodeServer();
    await node.ready;
    t.mark('ready');
    expectSessionLeader(node);
    const idle = await openIdleConnections(node.port, 4, { mode: 'mixed' });
    const stats = await httpLoadFor(node.port, { concurrency: 4, keepAlive: true, expectBody: node.body });
    t.mark(`load (${stats.ok} ok, max stall ${stats.maxStallMs.toFixed(1)} ms)`);
    await idle.close();
    await expectCleanStop(node, t);
    t.print();
  });

  it('jvm: >= 30 threads, 200 with the body under keep-alive load', async () => {
    const t = new Timings('jvm');
    const jvm = await startJvm();
    t.mark('javac and bind');
    await jvm.ready;
    t.mark('ready');
    expectSessionLeader(jvm);
    expect(jvm.threads()).toBeGreaterThanOrEqual(30);
    const stats = await httpLoadFor(jvm.port, { concurrency: 4, keepAlive: true, expectBody: jvm.body });
    t.mark(`load (${stats.ok} ok, max stall ${stats.maxStallMs.toFixed(1)} ms, ${jvm.threads()} threads)`);
    await expectCleanStop(jvm, t);
    t.print();
  });

  it('runc container: a busybox init in its own pid namespace bumps its counter; stop deletes the container', async () => {
    const t = new Timings('runc');
    const box = await startRuncContainer();
    await box.ready;
    t.mark('ready');
    const stat = readProcStat(box.pid)!;
    expect([stat.session, stat.pgrp], 'runc makes the init a session leader').toEqual([box.pid, box.pid]);
    expect(readlinkSync(`/proc/${box.pid}/ns/pid`), 'the container has a pid namespace of its own').not.toBe(readlinkSync('/proc/self/ns/pid'));
    expect(readlinkSync(`/proc/${box.pid}/ns/net`), 'and a network namespace of its own').not.toBe(readlinkSync('/proc/self/ns/net'));
    expect(box.pids(), 'the counter loop forks nothing').toEqual([box.pid]);
    expect((await box.state())?.status).toBe('running');
    const before = box.readCounter();
    expect(before).toBeDefined();
    await sleep(loadMs);
    const after = box.readCounter();
    expect(after).toBeDefined();
    t.mark(`load (counter ${before} -> ${after})`);
    expect(after! - before!, 'about 20 ticks a second').toBeGreaterThan(5);
    await box.waitForCounter(2);
    const id = box.id;
    const stateDir = box.stateDir;
    await expectCleanStop(box, t);
    expect(existsSync(`${stateDir}/${id}`)).toBe(false);
    t.print();
  });

  it("a frozen service: a stall, not an error, for the clients; their stop() and the service's stop() stay bounded", async () => {
    const t = new Timings('frozen');
    const [redis, node] = await Promise.all([startRedis(), startNodeServer()]);
    await Promise.all([redis.ready, node.ready]);
    t.mark('ready');
    const client = await startRedisClient(redis.port);
    const load = startHttpLoad(node.port, { concurrency: 2, keepAlive: true });
    await Promise.all([client.waitForOps(100), load.waitForRequests(100)]);
    for (const service of [redis, node]) process.kill(service.pid, 'SIGSTOP');
    await sleep(1500);
    for (const service of [redis, node]) process.kill(service.pid, 'SIGCONT');
    await Promise.all([client.waitForOps(100), load.waitForRequests(100)]);
    t.mark('1.5 s freeze');
    const [redisStats, httpStats] = await Promise.all([client.stop(), load.stop()]);
    expect(redisStats.errors, redisStats.errorMessages.join('; ')).toBe(0);
    expect(redisStats.maxStallMs).toBeGreaterThanOrEqual(1400);
    expect(httpStats.failed, httpStats.errors.join('; ')).toBe(0);
    expect(httpStats.maxStallMs).toBeGreaterThanOrEqual(1400);

    // Frozen again, for good: the clients' stop() gives up on the request in flight, and SIGKILL ends a stopped tree.
    const client2 = await startRedisClient(redis.port);
    const load2 = startHttpLoad(node.port, { concurrency: 2, keepAlive: true });
    await Promise.all([client2.waitForOps(10), load2.waitForRequests(10)]);
    for (const service of [redis, node]) process.kill(service.pid, 'SIGSTOP');
    await sleep(200);
    const stopping = performance.now();
    await Promise.all([client2.stop(), load2.stop()]);
    expect(performance.now() - stopping, 'client stop() while the service is frozen').toBeLessThan(4000);
    t.mark('clients stopped against a frozen service');
    await expectCleanStop(redis, t);
    await expectCleanStop(node, t);
    t.print();
  });
});
