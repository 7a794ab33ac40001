// test/fixtures/services/node-server.mjs on the repository's own Node: one process, answering 200 with a known body.
import { join } from 'node:path';
import { nodeBin, repoRoot } from '../paths.js';
import { httpProbe, inServiceDir, launchListening, SpawnedService, type ServiceInit } from './common.js';

export const nodeServerScript = join(repoRoot, 'test', 'fixtures', 'services', 'node-server.mjs');

export interface NodeServerOptions {
  bodyBytes?: number;
  readyTimeoutMs?: number;
}

/** The body node-server.mjs answers for `bytes` (it builds the same string). */
export function nodeServerBody(bytes = 2048): string {
  let body = 'procsnap node service\n';
  for (let i = 0; body.length < bytes; i++) body += `line ${i} of the node page\n`;
  return body.slice(0, Math.max(bytes, 22));
}

export class NodeService extends SpawnedService {
  constructor(
    init: ServiceInit,
    readonly body: string,
  ) {
    super(init);
  }
}

/** ready: GET / answers 200 with the body. */
export async function startNodeServer(options: NodeServerOptions = {}): Promise<NodeService> {
  const { bodyBytes = 2048, readyTimeoutMs = 10_000 } = options;
  const body = nodeServerBody(bodyBytes);
  return inServiceDir('node', async (dir) => {
    const launched = await launchListening({
      name: 'node',
      dir,
      // NODE_OPTIONS cleared: the test runner's own options are not the service's. The dir is there to be seen in
      // the command line (which tells this server from a later process with the same pid).
      build: (port) => ({ command: nodeBin, args: [nodeServerScript, String(port), String(bodyBytes), dir], cwd: dir, env: { NODE_OPTIONS: '' } }),
    });
    const seen = { last: 'nothing yet' };
    const init: ServiceInit = { name: 'node', dir, launched, readyTimeoutMs, probe: httpProbe(launched.port, body, seen), detail: () => seen.last };
    return new NodeService(init, body);
  });
}
