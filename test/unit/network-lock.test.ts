// Finding criu's network lock again: the nftables table of a run, named from the run id criu logs; the iptables rules
// of a connection, in either direction, as `iptables -S` prints them.
import { describe, expect, it } from 'vitest';
import { criuRunId, networkLockGiven, nftTableOf, ruleLocksConnection } from '../../src/tools/network-lock.js';

describe('criu network lock', () => {
  it('the run id is read from the first line criu logs, and the table name is cut as criu cuts it (31 characters with "inet ")', () => {
    const log = '(00.000000) CRIU run id = 2da4abee-42dd-47f9-a8b4-d42dc1fc4916\n(00.000010) Version: 4.2.1\n';
    const id = criuRunId(log);
    expect(id).toBe('2da4abee-42dd-47f9-a8b4-d42dc1fc4916');
    // As criu 4.2.1 logged it for that run: `add element inet CRIU-2da4abee-42dd-47f9-a8 conns4 {...}`.
    expect(nftTableOf(id!)).toBe('CRIU-2da4abee-42dd-47f9-a8');
    expect(criuRunId('no id here')).toBeUndefined();
  });

  it('an iptables rule names a connection in either direction, and no other', () => {
    const c = { local: '127.0.0.1:8080', remote: '127.0.0.1:51234' };
    const out = '-A OUTPUT -s 127.0.0.1/32 -d 127.0.0.1/32 -p tcp -m tcp --sport 8080 --dport 51234 -m mark ! --mark 0xc114 -j DROP';
    const inb = '-A INPUT -s 127.0.0.1/32 -d 127.0.0.1/32 -p tcp -m tcp --sport 51234 --dport 8080 -m mark ! --mark 0xc114 -j DROP';
    const other = '-A INPUT -s 127.0.0.1/32 -d 127.0.0.1/32 -p tcp -m tcp --sport 51235 --dport 8080 -m mark ! --mark 0xc114 -j DROP';
    expect(ruleLocksConnection(out, c)).toBe(true);
    expect(ruleLocksConnection(inb, c)).toBe(true);
    expect(ruleLocksConnection(other, c)).toBe(false);
    const v6 = { local: '[::1]:8080', remote: '[::1]:40000' };
    expect(ruleLocksConnection('-A INPUT -s ::1/128 -d ::1/128 -p tcp -m tcp --sport 40000 --dport 8080 -m mark ! --mark 0xc114 -j DROP', v6)).toBe(true);
  });

  it('a method the person gave is read in both spellings', () => {
    expect(networkLockGiven(['--network-lock', 'iptables'])).toBe('iptables');
    expect(networkLockGiven(['--tcp-close', '--network-lock=skip'])).toBe('skip');
    expect(networkLockGiven(['--tcp-established'])).toBeUndefined();
  });
});
