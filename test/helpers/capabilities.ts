// What this host lets root do, read the way the product reads it: tests that depend on a capability say so.
import { readFileSync } from 'node:fs';

/** CAP_SYS_RESOURCE (bit 24) in this process's effective set: criu needs it to dump a task of another uid. */
export function hostHasSysResource(): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? ((BigInt('0x' + m[1]) >> 24n) & 1n) === 1n : false;
}
