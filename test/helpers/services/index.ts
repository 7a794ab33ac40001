// The service harness: real services on 127.0.0.1 for the tests to capture, and the load clients that drive them.
// Every start* function resolves once its process is spawned (a session leader, in the foreground) and holds its
// listening socket; `await service.ready` before use. Call stopAllServices() in afterAll.
import { startJvm, type JvmOptions, type JvmService } from './jvm.js';
import { startMariaDb, type MariaDbOptions, type MariaDbService } from './mariadb.js';
import { startNginx, type NginxOptions, type NginxService } from './nginx.js';
import { startNodeServer, type NodeServerOptions, type NodeService } from './node.js';
import { startPostgres, type PostgresOptions, type PostgresService } from './postgres.js';
import { startPython, type PythonOptions, type PythonService } from './python.js';
import { startRedis, type RedisOptions, type RedisService } from './redis.js';
import { startRuncContainer, type RuncOptions, type RuncService } from './runc.js';

export * from './common.js';
export * from './jvm.js';
export * from './load.js';
export * from './mariadb.js';
export * from './nginx.js';
export * from './node.js';
export * from './postgres.js';
export * from './python.js';
export * from './redis.js';
export * from './runc.js';

export interface ServiceTypes {
  redis: [RedisOptions, RedisService];
  nginx: [NginxOptions, NginxService];
  postgres: [PostgresOptions, PostgresService];
  mariadb: [MariaDbOptions, MariaDbService];
  python: [PythonOptions, PythonService];
  node: [NodeServerOptions, NodeService];
  jvm: [JvmOptions, JvmService];
  runc: [RuncOptions, RuncService];
}
export type ServiceName = keyof ServiceTypes;
export const serviceNames = ['redis', 'nginx', 'postgres', 'mariadb', 'python', 'node', 'jvm', 'runc'] as const satisfies readonly ServiceName[];

const starters: { [K in ServiceName]: (options?: ServiceTypes[K][0]) => Promise<ServiceTypes[K][1]> } = {
  redis: startRedis,
  nginx: startNginx,
  postgres: startPostgres,
  mariadb: startMariaDb,
  python: startPython,
  node: startNodeServer,
  jvm: startJvm,
  runc: startRuncContainer,
};

/** startService('nginx', { workers: 4 }) is startNginx({ workers: 4 }), for tests parameterised by service. */
export function startService<K extends ServiceName>(name: K, options?: ServiceTypes[K][0]): Promise<ServiceTypes[K][1]> {
  return starters[name](options);
}
