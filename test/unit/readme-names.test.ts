// The README names procsnap's configuration variables as the code reads them, and never calls snapd's `snap` ours.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_VARIABLES } from '../../src/environment.js';
import { repoRoot } from '../helpers/paths.js';

const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');

describe('README names', () => {
  it('lists every configuration variable as PROCSNAP_*, and names no SNAP_* variable as one to set', () => {
    const listed = /^Configuration variables are `PROCSNAP_\*`: (.*?)\.\s+The\s+`SNAP_\*` names/ms.exec(readme)?.[1] ?? '';
    expect([...listed.matchAll(/`PROCSNAP_([A-Z_]+)`/g)].map((m) => m[1]).sort()).toEqual([...CONFIG_VARIABLES].sort());
    const snapVariables = [...readme.matchAll(/(?<![A-Z_])SNAP_[A-Z_]+/g)].map((m) => m[0]);
    expect(snapVariables, 'only snapd\'s own, as an example of its namespace').toEqual(['SNAP_DATA']);
  });

  it('says `snap` is snapd\'s where it says so, and the journal is in /run/procsnap', () => {
    expect(readme).not.toMatch(/`procsnap` is\s+snapd's|another program's `procsnap`/);
    expect(readme).toMatch(/another program's `snap`, such as Ubuntu's\s+snapd/);
    expect(readme).toContain('/run/procsnap/target-PID.json');
  });
});
