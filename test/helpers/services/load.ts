// Load clients for the services, in-process on node:net and node:http: a persistent Redis (RESP), PostgreSQL
// (wire protocol) or MySQL/MariaDB (client/server protocol) connection that never reconnects, HTTP loops with or without keep-alive, and idle connections.
// Every stop() ends within a few seconds, whatever the service is doing (frozen, dead, restoring).
import { Agent, request, type ClientRequest } from 'node:http';
import { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { registerClient, unregisterClient } from './common.js';

const keepErrors = 5;

function noteError(list: string[], message: string): void {
  if (list.length < keepErrors) list.push(message);
}

/** Waits for `promise` at most `ms`; true if it settled in time. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const timeout = sleep(ms, 'timeout' as const);
  const outcome = await Promise.race([promise.then(() => 'settled' as const, () => 'settled' as const), timeout]);
  return outcome === 'settled';
}

// --- one persistent connection, one request at a time ------------------------------------------------------------

export interface ConnectionStats {
  /** Replies received and checked correct. */
  ops: number;
  /** Error replies, wrong values, reply timeouts (counted once per request; it then keeps waiting for the reply),
   *  and a socket error or close (which ends the loop). */
  errors: number;
  /** Always 0: the client never reconnects; a lost connection is an error and the end of the loop. */
  reconnects: number;
  /** The longest time without a reply while one was awaited: from connecting to the first reply, between two replies,
   *  and from the last reply to stop() if a request was still in flight. */
  maxStallMs: number;
  /** The first few error messages. */
  errorMessages: string[];
  /** False once the loop has ended (stopped, or the connection was lost). */
  running: boolean;
}

export interface ConnectionClient {
  stats(): ConnectionStats;
  /** Resolves once the client has completed `n` more ops than now (bounded). */
  waitForOps(n?: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<ConnectionStats>;
}

interface Protocol<R> {
  name: string;
  /** The packet a server sends unasked once connected (MySQL's greeting): awaited and checked before the handshake. */
  greeting?: (reply: R) => string | undefined;
  /** Sent right after connecting (after the greeting, if any); its reply is checked like any other but does not count as an op. */
  handshake?: { request: Buffer; check: (reply: R) => string | undefined };
  /** The i-th request and the check of its reply (undefined: correct; a string: what was wrong). */
  next: (i: number) => { request: Buffer; check: (reply: R) => string | undefined };
  /** One whole reply from the front of `buffer`, or undefined if it is not all there yet. */
  parse: (buffer: Buffer) => { reply: R; consumed: number } | undefined;
}

interface ClientOptions {
  /** A reply later than this is an error (5 s unless told); the client still waits for it. */
  replyTimeoutMs?: number;
  connectTimeoutMs?: number;
}

async function startConnectionClient<R>(port: number, protocol: Protocol<R>, options: ClientOptions = {}): Promise<ConnectionClient> {
  const { replyTimeoutMs = 5000, connectTimeoutMs = 5000 } = options;
  const socket = new Socket();
  socket.setNoDelay(true);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => socket.destroy(new Error(`${protocol.name}: no connection to 127.0.0.1:${port} in ${connectTimeoutMs} ms`)), connectTimeoutMs);
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.connect(port, '127.0.0.1', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve();
    });
  });

  const stats: ConnectionStats = { ops: 0, errors: 0, reconnects: 0, maxStallMs: 0, errorMessages: [], running: true };
  let buffer: Buffer = Buffer.alloc(0);
  let lastReplyAt = performance.now();
  let stopping = false;
  let dead = false;
  let waiting: { resolve: (reply: R | undefined) => void } | undefined;
  const fail = (message: string): void => {
    stats.errors++;
    noteError(stats.errorMessages, message);
  };
  const noteStall = (now: number): void => {
    stats.maxStallMs = Math.max(stats.maxStallMs, now - lastReplyAt);
  };
  const lose = (message: string): void => {
    if (dead) return;
    dead = true;
    if (!stopping) fail(message);
    waiting?.resolve(undefined);
    waiting = undefined;
  };
  socket.on('data', (chunk: Buffer) => {
    buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
    for (;;) {
      let parsed: { reply: R; consumed: number } | undefined;
      try {
        parsed = protocol.parse(buffer);
      } catch (error) {
        socket.destroy();
        lose(`${protocol.name}: unparsable reply: ${(error as Error).message}`);
        return;
      }
      if (parsed === undefined) return;
      buffer = buffer.subarray(parsed.consumed);
      const now = performance.now();
      noteStall(now);
      lastReplyAt = now;
      if (waiting === undefined) {
        socket.destroy();
        lose(`${protocol.name}: a reply nobody asked for`);
        return;
      }
      const w = waiting;
      waiting = undefined;
      w.resolve(parsed.reply);
    }
  });
  socket.on('error', (error) => lose(`${protocol.name}: socket error: ${error.message}`));
  socket.on('close', () => lose(`${protocol.name}: connection closed by the server`));

  /** Sends one request and waits for its reply; undefined if the connection is gone. */
  const exchange = (payload: Buffer): Promise<R | undefined> =>
    new Promise<R | undefined>((resolve) => {
      if (dead) return resolve(undefined);
      const timer = setTimeout(() => fail(`${protocol.name}: no reply in ${replyTimeoutMs} ms`), replyTimeoutMs);
      waiting = {
        resolve: (reply) => {
          clearTimeout(timer);
          resolve(reply);
        },
      };
      if (payload.length > 0) socket.write(payload); // an empty payload waits for what the server says unasked
    });

  let completed = 0;
  const loop = (async () => {
    if (protocol.greeting) {
      const reply = await exchange(Buffer.alloc(0));
      if (reply === undefined) return;
      const wrong = protocol.greeting(reply);
      if (wrong !== undefined) {
        fail(`${protocol.name}: greeting: ${wrong}`);
        socket.destroy();
        return;
      }
    }
    if (protocol.handshake) {
      const reply = await exchange(protocol.handshake.request);
      if (reply === undefined) return;
      const wrong = protocol.handshake.check(reply);
      if (wrong !== undefined) {
        fail(`${protocol.name}: handshake: ${wrong}`);
        socket.destroy();
        return;
      }
    }
    for (let i = 0; !stopping && !dead; i++) {
      const { request: payload, check } = protocol.next(i);
      const reply = await exchange(payload);
      if (reply === undefined) break;
      const wrong = check(reply);
      if (wrong === undefined) stats.ops++;
      else fail(`${protocol.name}: ${wrong}`);
      completed++;
    }
  })().finally(() => {
    stats.running = false;
  });

  let stopped: Promise<ConnectionStats> | undefined;
  const client: ConnectionClient = {
    stats: () => ({ ...stats, errorMessages: [...stats.errorMessages] }),
    async waitForOps(n = 1, timeoutMs = 10_000) {
      const target = completed + n;
      const deadline = performance.now() + timeoutMs;
      while (completed < target) {
        if (!stats.running) throw new Error(`${protocol.name} client ended after ${completed} requests: ${stats.errorMessages.join('; ')}`);
        if (performance.now() > deadline) throw new Error(`${protocol.name} client: ${completed} of ${target} requests after ${timeoutMs} ms`);
        await sleep(10);
      }
    },
    stop() {
      stopped ??= (async () => {
        stopping = true;
        // Let the request in flight finish (it ends the loop), but not for long: the service may be frozen.
        if (!(await settlesWithin(loop, 2000))) noteStall(performance.now());
        socket.destroy();
        lose('stopped');
        await settlesWithin(loop, 1000);
        unregisterClient(client);
        return client.stats();
      })();
      return stopped;
    },
  };
  registerClient(client);
  return client;
}

// --- Redis ---------------------------------------------------------------------------------------------------------

export type RespValue = string | number | null | RespError | RespValue[];
export class RespError {
  constructor(readonly message: string) {}
}

export function encodeResp(args: string[]): Buffer {
  const parts = [`*${args.length}\r\n`];
  for (const arg of args) parts.push(`$${Buffer.byteLength(arg)}\r\n${arg}\r\n`);
  return Buffer.from(parts.join(''));
}

/** One RESP2 value from the front of `buffer`, or undefined if incomplete. */
export function parseResp(buffer: Buffer, offset = 0): { reply: RespValue; consumed: number } | undefined {
  const lineEnd = buffer.indexOf('\r\n', offset);
  if (lineEnd < 0) return undefined;
  const type = String.fromCharCode(buffer[offset]!);
  const line = buffer.toString('utf8', offset + 1, lineEnd);
  const after = lineEnd + 2;
  switch (type) {
    case '+':
      return { reply: line, consumed: after - offset };
    case '-':
      return { reply: new RespError(line), consumed: after - offset };
    case ':':
      return { reply: Number(line), consumed: after - offset };
    case '$': {
      const length = Number(line);
      if (length < 0) return { reply: null, consumed: after - offset };
      if (buffer.length < after + length + 2) return undefined;
      return { reply: buffer.toString('utf8', after, after + length), consumed: after + length + 2 - offset };
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return { reply: null, consumed: after - offset };
      const items: RespValue[] = [];
      let at = after;
      for (let k = 0; k < count; k++) {
        const item = parseResp(buffer, at);
        if (item === undefined) return undefined;
        items.push(item.reply);
        at += item.consumed;
      }
      return { reply: items, consumed: at - offset };
    }
    default:
      throw new Error(`unknown RESP type ${JSON.stringify(type)} in ${JSON.stringify(buffer.toString('latin1', offset, offset + 40))}`);
  }
}

export interface RedisClientOptions extends ClientOptions {
  /** Keys cycle through procsnap:k:0 .. keySpace-1 (10000 unless told), so memory stays bounded. */
  keySpace?: number;
}

const describeResp = (reply: RespValue): string => (reply instanceof RespError ? `error reply -${reply.message}` : JSON.stringify(reply));

/** ONE persistent connection doing SET k_i v_i then GET k_i (checking the value) in a loop; each command is an op. */
export function startRedisClient(port: number, options: RedisClientOptions = {}): Promise<ConnectionClient> {
  const keySpace = options.keySpace ?? 10_000;
  return startConnectionClient<RespValue>(
    port,
    {
      name: 'redis',
      next: (n) => {
        const i = Math.floor(n / 2);
        const key = `procsnap:k:${i % keySpace}`;
        const value = `v_${i}`;
        if (n % 2 === 0) return { request: encodeResp(['SET', key, value]), check: (r) => (r === 'OK' ? undefined : `SET ${key}: ${describeResp(r)}`) };
        return { request: encodeResp(['GET', key]), check: (r) => (r === value ? undefined : `GET ${key}: ${describeResp(r)}, expected ${value}`) };
      },
      parse: (buffer) => parseResp(buffer),
    },
    options,
  );
}

// --- PostgreSQL ----------------------------------------------------------------------------------------------------

interface PgMessage {
  type: string;
  body: Buffer;
}

function pgMessage(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

function pgStartup(user: string, database: string): Buffer {
  const params = Buffer.from(`user\0${user}\0database\0${database}\0application_name\0procsnap-load\0\0`);
  const head = Buffer.alloc(8);
  head.writeInt32BE(params.length + 8, 0);
  head.writeInt32BE(196608, 4); // protocol 3.0
  return Buffer.concat([head, params]);
}

/** Every backend message up to and including ReadyForQuery ('Z'), or undefined if incomplete. */
function parsePgUntilReady(buffer: Buffer): { reply: PgMessage[]; consumed: number } | undefined {
  const messages: PgMessage[] = [];
  let at = 0;
  while (buffer.length >= at + 5) {
    const type = String.fromCharCode(buffer[at]!);
    const length = buffer.readInt32BE(at + 1);
    if (length < 4) throw new Error(`bad message length ${length}`);
    if (buffer.length < at + 1 + length) return undefined;
    messages.push({ type, body: buffer.subarray(at + 5, at + 1 + length) });
    at += 1 + length;
    if (type === 'Z') return { reply: messages, consumed: at };
  }
  return undefined;
}

function pgError(messages: PgMessage[]): string | undefined {
  const error = messages.find((m) => m.type === 'E');
  if (error === undefined) return undefined;
  const fields = error.body.toString('utf8').split('\0');
  return fields.find((f) => f.startsWith('M'))?.slice(1) ?? 'error';
}

/** The first column of the first DataRow. */
function pgFirstValue(messages: PgMessage[]): string | null | undefined {
  const row = messages.find((m) => m.type === 'D');
  if (row === undefined || row.body.readInt16BE(0) < 1) return undefined;
  const length = row.body.readInt32BE(2);
  return length < 0 ? null : row.body.toString('utf8', 6, 6 + length);
}

export interface PostgresClientOptions extends ClientOptions {
  user?: string;
  database?: string;
}

/** ONE persistent connection (trust auth) running `select i` in a loop and checking the answer; each query is an op. */
export function startPostgresClient(port: number, options: PostgresClientOptions = {}): Promise<ConnectionClient> {
  const { user = 'postgres', database = 'postgres' } = options;
  return startConnectionClient<PgMessage[]>(
    port,
    {
      name: 'postgres',
      handshake: {
        request: pgStartup(user, database),
        check: (messages) => {
          const error = pgError(messages);
          if (error !== undefined) return error;
          const auth = messages.find((m) => m.type === 'R');
          return auth !== undefined && auth.body.readInt32BE(0) === 0 ? undefined : 'no AuthenticationOk (is pg_hba trust?)';
        },
      },
      next: (i) => ({
        request: pgMessage('Q', Buffer.from(`select ${i}\0`)),
        check: (messages) => {
          const error = pgError(messages);
          if (error !== undefined) return `select ${i}: ${error}`;
          const value = pgFirstValue(messages);
          return value === String(i) ? undefined : `select ${i} answered ${JSON.stringify(value)}`;
        },
      }),
      parse: parsePgUntilReady,
    },
    options,
  );
}

// --- MySQL / MariaDB -----------------------------------------------------------------------------------------------

/** One packet: 3 bytes of length (little-endian), a sequence id, the payload. */
function mysqlPacket(sequence: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUIntLE(payload.length, 0, 3);
  header[3] = sequence;
  return Buffer.concat([header, payload]);
}

/** The payload of one whole packet from the front of `buffer`; every reply this client awaits is one packet (the
 *  greeting, OK or ERR). */
function parseMysqlPacket(buffer: Buffer): { reply: Buffer; consumed: number } | undefined {
  if (buffer.length < 4) return undefined;
  const length = buffer.readUIntLE(0, 3);
  if (buffer.length < 4 + length) return undefined;
  return { reply: buffer.subarray(4, 4 + length), consumed: 4 + length };
}

/** Why a reply is not an OK packet (an ERR's code and message, or what came instead); undefined for OK. */
function mysqlNotOk(reply: Buffer): string | undefined {
  if (reply[0] === 0x00) return undefined;
  if (reply[0] === 0xff) return `ERR ${reply.readUInt16LE(1)}: ${reply.toString('utf8', reply[3] === 0x23 ? 9 : 3)}`;
  if (reply[0] === 0xfe) return 'the server asks for another authentication method (is the password empty?)';
  return `not an OK packet (0x${(reply[0] ?? 0).toString(16)})`;
}

// CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH
const mysqlCapabilities = 0x1 | 0x200 | 0x2000 | 0x8000 | 0x80000;

/** HandshakeResponse41 for `user` with an empty password: an empty auth response needs no scramble. */
function mysqlHandshakeResponse(user: string): Buffer {
  const fixed = Buffer.alloc(32); // capabilities, max packet size, character set (utf8mb4), 23 bytes of filler
  fixed.writeUInt32LE(mysqlCapabilities, 0);
  fixed.writeUInt32LE(1 << 24, 4);
  fixed[8] = 45;
  const payload = Buffer.concat([fixed, Buffer.from(`${user}\0`), Buffer.from([0]), Buffer.from('mysql_native_password\0')]);
  return mysqlPacket(1, payload);
}

export interface MysqlClientOptions extends ClientOptions {
  user?: string;
  /** The table the loop inserts into, `database.table` with an integer column n (it must exist). */
  table: string;
}

/** ONE persistent connection (the user's password empty) running `insert into TABLE (n) values (i)` in a loop, each
 *  checked to affect one row; each INSERT is an op. */
export function startMysqlInsertClient(port: number, options: MysqlClientOptions): Promise<ConnectionClient> {
  const { user = 'root', table } = options;
  return startConnectionClient<Buffer>(
    port,
    {
      name: 'mysql',
      greeting: (reply) => (reply[0] === 0xff ? mysqlNotOk(reply) : reply[0] === 10 ? undefined : `protocol version ${reply[0]}, not 10`),
      handshake: { request: mysqlHandshakeResponse(user), check: mysqlNotOk },
      next: (i) => ({
        request: mysqlPacket(0, Buffer.concat([Buffer.from([0x03]), Buffer.from(`insert into ${table} (n) values (${i})`)])), // COM_QUERY
        check: (reply) => {
          const wrong = mysqlNotOk(reply);
          if (wrong !== undefined) return `insert ${i}: ${wrong}`;
          return reply[1] === 1 ? undefined : `insert ${i}: ${reply[1]} rows affected`;
        },
      }),
      parse: parseMysqlPacket,
    },
    options,
  );
}

// --- HTTP ----------------------------------------------------------------------------------------------------------

export interface HttpLoadOptions {
  /** Loops, each doing one request after another (4 unless told). */
  concurrency?: number;
  /** true: one keep-alive Agent with maxSockets = concurrency; false: a new connection per request. true unless told. */
  keepAlive?: boolean;
  path?: string;
  /** Per request (socket inactivity) timeout; 5 s unless told. */
  timeoutMs?: number;
  /** If given, a 200 with another body is a failure. */
  expectBody?: string;
}

export interface HttpLoadStats {
  ok: number;
  failed: number;
  /** The first few failure messages. */
  errors: string[];
  /** The longest time without any completed request while some were in flight (start to first, between two, last to
   *  stop() if requests were still in flight). */
  maxStallMs: number;
  /** The slowest single request. */
  maxLatencyMs: number;
}

export interface HttpLoad {
  stats(): HttpLoadStats;
  /** Resolves once `n` more requests have completed (ok or failed) than now (bounded). */
  waitForRequests(n?: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<HttpLoadStats>;
}

export function startHttpLoad(port: number, options: HttpLoadOptions = {}): HttpLoad {
  const { concurrency = 4, keepAlive = true, path = '/', timeoutMs = 5000, expectBody } = options;
  const agent = keepAlive ? new Agent({ keepAlive: true, maxSockets: concurrency }) : new Agent({ keepAlive: false });
  const stats: HttpLoadStats = { ok: 0, failed: 0, errors: [], maxStallMs: 0, maxLatencyMs: 0 };
  const inFlight = new Set<ClientRequest>();
  let lastCompletionAt = performance.now();
  let stopping = false;
  let completed = 0;

  const one = (): Promise<void> =>
    new Promise<void>((resolve) => {
      const started = performance.now();
      let settled = false;
      const finish = (failure: string | undefined): void => {
        if (settled) return;
        settled = true;
        inFlight.delete(req);
        if (stopping && failure !== undefined) return resolve(); // torn down by stop(): not the service's failure
        const now = performance.now();
        stats.maxStallMs = Math.max(stats.maxStallMs, now - lastCompletionAt);
        stats.maxLatencyMs = Math.max(stats.maxLatencyMs, now - started);
        lastCompletionAt = now;
        completed++;
        if (failure === undefined) stats.ok++;
        else {
          stats.failed++;
          noteError(stats.errors, failure);
        }
        resolve();
      };
      const req = request({ host: '127.0.0.1', port, path, method: 'GET', agent, timeout: timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          if (res.statusCode !== 200) return finish(`GET ${path}: status ${res.statusCode}`);
          if (expectBody !== undefined) {
            const body = Buffer.concat(chunks).toString('utf8');
            if (body !== expectBody) return finish(`GET ${path}: 200 with ${body.length} bytes, not the expected ${expectBody.length}`);
          }
          finish(undefined);
        });
        res.on('error', (error) => finish(`GET ${path}: response error: ${error.message}`));
        res.on('aborted', () => finish(`GET ${path}: response aborted`));
      });
      inFlight.add(req);
      req.on('timeout', () => req.destroy(new Error(`no reply activity in ${timeoutMs} ms`)));
      req.on('error', (error) => finish(`GET ${path}: ${error.message}`));
      req.on('close', () => finish(`GET ${path}: closed before the response ended`));
      req.end();
    });

  const loops = Array.from({ length: concurrency }, async () => {
    while (!stopping) await one();
  });
  const all = Promise.all(loops);

  let stopped: Promise<HttpLoadStats> | undefined;
  const load: HttpLoad = {
    stats: () => ({ ...stats, errors: [...stats.errors] }),
    async waitForRequests(n = 1, timeoutMs = 10_000) {
      const target = completed + n;
      const deadline = performance.now() + timeoutMs;
      while (completed < target) {
        if (performance.now() > deadline) throw new Error(`HTTP load: ${completed} of ${target} requests after ${timeoutMs} ms (${stats.errors.join('; ')})`);
        await sleep(10);
      }
    },
    stop() {
      stopped ??= (async () => {
        stopping = true;
        if (!(await settlesWithin(all, 2000))) {
          // Still in flight after 2 s: count that stall, then tear the requests down.
          stats.maxStallMs = Math.max(stats.maxStallMs, performance.now() - lastCompletionAt);
          for (const req of inFlight) req.destroy();
        }
        await settlesWithin(all, 1000);
        agent.destroy();
        unregisterClient(load);
        return load.stats();
      })();
      return stopped;
    },
  };
  registerClient(load);
  return load;
}

// --- idle connections ----------------------------------------------------------------------------------------------

export interface IdleConnections {
  readonly count: number;
  /** How many the server has closed so far. */
  closedByServer(): number;
  close(): Promise<void>;
}

export interface IdleOptions {
  /** 'silent': connect and send nothing; 'partial': send a request line and a header but never the blank line;
   *  'mixed' (the default): alternate. */
  mode?: 'silent' | 'partial' | 'mixed';
  connectTimeoutMs?: number;
}

/** Opens `n` connections that stay in flight (accepted or still in the listen backlog); resolves once all are
 *  connected (the kernel completes the handshake even if the server never accepts). */
export async function openIdleConnections(port: number, n: number, options: IdleOptions = {}): Promise<IdleConnections> {
  const { mode = 'mixed', connectTimeoutMs = 5000 } = options;
  const sockets: Socket[] = [];
  let closing = false;
  let closedByServer = 0;
  const connects = Array.from({ length: n }, (_, k) =>
    new Promise<void>((resolve, reject) => {
      const socket = new Socket();
      sockets.push(socket);
      const timer = setTimeout(() => socket.destroy(new Error(`idle connection ${k}: no connection in ${connectTimeoutMs} ms`)), connectTimeoutMs);
      socket.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      socket.on('close', () => {
        if (!closing) closedByServer++;
      });
      socket.on('data', () => undefined);
      socket.connect(port, '127.0.0.1', () => {
        clearTimeout(timer);
        const partial = mode === 'partial' || (mode === 'mixed' && k % 2 === 1);
        if (partial) socket.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n');
        resolve();
      });
    }),
  );
  const idle: IdleConnections = {
    count: n,
    closedByServer: () => closedByServer,
    async close() {
      closing = true;
      await Promise.all(
        sockets.map((socket) => {
          if (socket.destroyed) return Promise.resolve();
          const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
          socket.destroy();
          return settlesWithin(closed, 1000);
        }),
      );
      unregisterClient(entry);
    },
  };
  const entry = { stop: () => idle.close() };
  registerClient(entry);
  try {
    await Promise.all(connects);
  } catch (error) {
    await idle.close();
    throw error;
  }
  return idle;
}
