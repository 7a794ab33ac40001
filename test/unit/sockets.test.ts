// The /proc/net tables, `ss -xan` and lock lines as this machine printed them (captured from python3 processes
// holding a listener, connections, UDP, unix and locked files), parsed by src/process/sockets.ts and tree-facts.ts.
import { describe, expect, it } from 'vitest';
import { formatIpv6, parseInetTable, parseLastColumnInodes, parseSsUnix, parseTcpTable, parseUnixTable, tcpStateName } from '../../src/process/net-tables.js';
import { socketInodeOf } from '../../src/process/sockets.js';
import { parseIdLine, parseLocks, parseNsPid, parsePasswd, sysvShmMaps } from '../../src/process/tree-facts.js';

// python3 -m http.server 18734 --bind 127.0.0.1 (17512), a listener on 18736 with one connection not yet accepted
// (17641, its client 17642), an accepted connection (17573), and a TIME_WAIT left by another test (inode 0).
const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 0100007F:492E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17512 1 00000000167e411d 100 0 0 10 0                     
   1: 0100007F:4930 00000000:0000 0A 00000000:00000001 00:00000000 00000000     0        0 17641 2 00000000eed5b0cb 100 0 0 10 0                     
1252: 0100007F:492E 0100007F:9E0A 01 00000000:00000000 00:00000000 00000000     0        0 17573 1 00000000b7fe4e57 20 0 0 10 -1                     
2119: 0100007F:BD64 0100007F:4930 01 00000000:00000000 00:00000000 00000000     0        0 17642 1 000000007bb7b9d7 20 0 0 10 -1                     
   3: 0100007F:9B73 0100007F:C8C8 06 00000000:00000000 03:0000014C 00000000     0        0 0 3 00000000d90462e8                                      `;

// A listener on [::1]:18735 with two connections not accepted (17638), their clients (17639, 17640), the server ends
// still in the accept queue (inode 0), and a listener bound to the IPv4-mapped ::ffff:127.0.0.1 (17645).
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   1: 0000000000000000FFFF00000100007F:4933 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17645 1 00000000553114a8 100 0 0 10 0
   2: 00000000000000000000000001000000:492F 00000000000000000000000000000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 17638 3 0000000062c0abb7 100 0 0 10 0
   3: 00000000000000000000000001000000:492F 00000000000000000000000001000000:8B7E 01 00000000:00000000 00:00000000 00000000     0        0 0 1 000000005561b811 20 0 0 10 -1
   4: 00000000000000000000000001000000:492F 00000000000000000000000001000000:8B7A 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000028fa874b 20 0 0 10 -1
   5: 00000000000000000000000001000000:8B7A 00000000000000000000000001000000:492F 01 00000000:00000000 00:00000000 00000000     0        0 17639 1 000000009326180b 20 0 0 10 -1
   6: 00000000000000000000000001000000:8B7E 00000000000000000000000001000000:492F 01 00000000:00000000 00:00000000 00000000     0        0 17640 1 0000000046b3edec 20 0 0 10 -1`;

const UDP = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            
 4316: 0100007F:4931 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 17643 2 000000009ff323dd 0         `;
const UDP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 4317: 00000000000000000000000001000000:4932 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 17644 2 000000008593901b 0`;

// A listening stream socket with one connection in its queue (the embryo: inode 0, CONNECTING), its client (17647),
// an abstract dgram name, a dgram socketpair (17649, 17650), an unbound seqpacket (17651).
const UNIX = `Num       RefCount Protocol Flags    Type St Inode Path
0000000002d81e6d: 00000003 00000000 00000000 0001 03   585
000000005166e221: 00000003 00000000 00000000 0002 03 17650
00000000fbda9c24: 00000003 00000000 00000000 0001 02     0 /tmp/snap-sock-test.sock
000000008541a0c1: 00000003 00000000 00000000 0001 03 17647
00000000f0c99c07: 00000003 00000000 00000000 0002 03 17649
0000000090e4fbf8: 00000002 00000000 00000000 0005 01 17651
00000000aabf67e8: 00000002 00000000 00010000 0001 01 17646 /tmp/snap-sock-test.sock
00000000e22d4417: 00000002 00000000 00000000 0002 01 17648 @snap-abstract`;

const SS = `Netid State  Recv-Q Send-Q            Local Address:Port  Peer Address:Port Process
u_str ESTAB  0      0                             * 585              * 584
u_dgr UNCONN 0      0                             * 17652            * 0
u_dgr ESTAB  0      0                             * 17650            * 17649
u_str ESTAB  0      0                             * 584              * 585
u_str ESTAB  0      0                             * 17647            * 0
u_dgr ESTAB  0      0                             * 17649            * 17650
u_seq UNCONN 0      0                             * 17651            * 0
u_str LISTEN 1      4      /tmp/snap-sock-test.sock 17646            * 0
u_dgr UNCONN 0      0                @snap-abstract 17648            * 0`;

// `ss -xanp`: a named stream listener and an accepted pair, a dgram client (31822) connected to a named dgram socket
// (31821). The path holds spaces.
const SS2 = `Netid State  Recv-Q Send-Q            Local Address:Port  Peer Address:Port Process
u_str LISTEN 0      1        /tmp/snap ux test.sock 31818            * 0     users:(("python3",pid=12192,fd=3))
u_dgr ESTAB  0      0             /tmp/snap-dg.sock 31821            * 0     users:(("python3",pid=12192,fd=6))
u_dgr ESTAB  0      0                             * 31822            * 31821 users:(("python3",pid=12192,fd=7))
u_str ESTAB  0      0        /tmp/snap ux test.sock 31820            * 31819 users:(("python3",pid=12192,fd=5))
u_str ESTAB  0      0                             * 31819            * 31820 users:(("python3",pid=12192,fd=4))`;
const UNIX2 = `Num       RefCount Protocol Flags    Type St Inode Path
00000000eb44cc31: 00000002 00000000 00010000 0001 01 31818 /tmp/snap ux test.sock
00000000618a3289: 00000003 00000000 00000000 0002 03 31821 /tmp/snap-dg.sock
00000000bae68526: 00000002 00000000 00000000 0002 03 31822
00000000361aa7cf: 00000003 00000000 00000000 0001 03 31820 /tmp/snap ux test.sock
0000000054b530a6: 00000003 00000000 00000000 0001 03 31819`;

const LOCKS = `1: OFDLCK ADVISORY  READ -1 fe:00:2148221 0 EOF
2: POSIX  ADVISORY  WRITE 8597 fe:00:2148220 0 EOF
3: FLOCK  ADVISORY  WRITE 8597 fe:00:2148219 0 EOF`;
const FDINFO = `pos:	0
flags:	02100002
mnt_id:	26
ino:	2148221
lock:	1: OFDLCK ADVISORY  READ -1 fe:00:2148221 0 EOF`;

describe('parseTcpTable', () => {
  const rows = parseTcpTable(TCP, true);
  it('decodes little-endian IPv4 addresses and the ports', () => {
    expect(rows.map((r) => [r.inode, r.local, r.remote, r.state])).toEqual([
      [17512, '127.0.0.1:18734', '0.0.0.0:0', 'LISTEN'],
      [17641, '127.0.0.1:18736', '0.0.0.0:0', 'LISTEN'],
      [17573, '127.0.0.1:18734', '127.0.0.1:40458', 'ESTABLISHED'],
      [17642, '127.0.0.1:48484', '127.0.0.1:18736', 'ESTABLISHED'],
      [0, '127.0.0.1:39795', '127.0.0.1:51400', 'TIME_WAIT'],
    ]);
  });
  it('rx_queue of a LISTEN socket is its accept backlog', () => {
    expect(rows.find((r) => r.inode === 17641)?.rxQueue).toBe(1);
    expect(rows.find((r) => r.inode === 17512)?.rxQueue).toBe(0);
  });
  it('keeps the hex state and the uid', () => {
    expect(rows[0]).toMatchObject({ stateHex: '0A', uid: 0, family: 'inet', localPort: 18734, remotePort: 0 });
  });
  it('a big-endian host prints the same address the other way round', () => {
    expect(parseTcpTable('   0: 7F000001:492E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17512 1', false)[0]?.local).toBe('127.0.0.1:18734');
  });
  it('skips the header and blank lines', () => {
    expect(parseTcpTable('  sl  local_address rem_address   st\n\n')).toEqual([]);
  });
});

describe('parseInetTable on tcp6, udp, udp6', () => {
  it('decodes IPv6 as four 32-bit words, and an IPv4-mapped address dotted', () => {
    const rows = parseInetTable(TCP6, true);
    expect(rows.map((r) => [r.inode, r.local, r.remote, r.state, r.rxQueue])).toEqual([
      [17645, '[::ffff:127.0.0.1]:18739', '[::]:0', 'LISTEN', 0],
      [17638, '[::1]:18735', '[::]:0', 'LISTEN', 2],
      [0, '[::1]:18735', '[::1]:35710', 'ESTABLISHED', 0],
      [0, '[::1]:18735', '[::1]:35706', 'ESTABLISHED', 0],
      [17639, '[::1]:35706', '[::1]:18735', 'ESTABLISHED', 0],
      [17640, '[::1]:35710', '[::1]:18735', 'ESTABLISHED', 0],
    ]);
    expect(rows.every((r) => r.family === 'inet6')).toBe(true);
  });
  it('UDP lines (with the extra drops column): an unconnected socket is CLOSE', () => {
    expect(parseInetTable(UDP, true)).toMatchObject([{ family: 'inet', local: '127.0.0.1:18737', state: 'CLOSE', inode: 17643 }]);
    expect(parseInetTable(UDP6, true)).toMatchObject([{ family: 'inet6', local: '[::1]:18738', state: 'CLOSE', inode: 17644 }]);
  });
});

describe('formatIpv6 and state names', () => {
  it('compresses the longest zero run, lower case', () => {
    const bytes = (hex: string) => hex.match(/../g)!.map((b) => parseInt(b, 16));
    expect(formatIpv6(bytes('fe8000000000000000fc00fffe000001'))).toBe('fe80::fc:ff:fe00:1');
    expect(formatIpv6(bytes('20010db8000000010000000000000001'))).toBe('2001:db8:0:1::1');
    expect(formatIpv6(bytes('20010db8000100010001000100010001'))).toBe('2001:db8:1:1:1:1:1:1');
    expect(formatIpv6(new Array(16).fill(0))).toBe('::');
  });
  it('names every TCP state of include/net/tcp_states.h', () => {
    expect(['01', '02', '06', '07', '08', '0A', '0B', '0C'].map(tcpStateName)).toEqual([
      'ESTABLISHED', 'SYN_SENT', 'TIME_WAIT', 'CLOSE', 'CLOSE_WAIT', 'LISTEN', 'CLOSING', 'NEW_SYN_RECV',
    ]);
    expect(tcpStateName('FF')).toBe('UNKNOWN(FF)');
  });
});

describe('parseUnixTable', () => {
  const rows = parseUnixTable(UNIX);
  it('type, state, inode and path; __SO_ACCEPTCON marks the listener', () => {
    expect(rows.map((r) => [r.inode, r.type, r.state, r.path])).toEqual([
      [585, 'stream', 'CONNECTED', undefined],
      [17650, 'dgram', 'CONNECTED', undefined],
      [0, 'stream', 'CONNECTING', '/tmp/snap-sock-test.sock'],
      [17647, 'stream', 'CONNECTED', undefined],
      [17649, 'dgram', 'CONNECTED', undefined],
      [17651, 'seqpacket', 'UNCONNECTED', undefined],
      [17646, 'stream', 'LISTEN', '/tmp/snap-sock-test.sock'],
      [17648, 'dgram', 'UNCONNECTED', '@snap-abstract'],
    ]);
    expect(rows.find((r) => r.inode === 17646)?.listening).toBe(true);
  });
  it('a path with spaces is taken whole', () => {
    expect(parseUnixTable(UNIX2).map((r) => r.path)).toEqual(['/tmp/snap ux test.sock', '/tmp/snap-dg.sock', undefined, '/tmp/snap ux test.sock', undefined]);
  });
});

describe('parseSsUnix', () => {
  it('inode and peer inode; Recv-Q of a listener is its backlog', () => {
    const rows = parseSsUnix(SS);
    expect(rows).toHaveLength(9);
    expect(rows.find((r) => r.inode === 17649)).toMatchObject({ netid: 'u_dgr', state: 'ESTAB', peer: 17650 });
    expect(rows.find((r) => r.inode === 17646)).toMatchObject({ state: 'LISTEN', recvQ: 1, local: '/tmp/snap-sock-test.sock', peer: 0 });
    expect(rows.find((r) => r.inode === 17648)?.local).toBe('@snap-abstract');
  });
  it('with -p and a path holding spaces', () => {
    const rows = parseSsUnix(SS2);
    expect(rows.map((r) => [r.inode, r.local, r.peer])).toEqual([
      [31818, '/tmp/snap ux test.sock', 0],
      [31821, '/tmp/snap-dg.sock', 0],
      [31822, '*', 31821],
      [31820, '/tmp/snap ux test.sock', 31819],
      [31819, '*', 31820],
    ]);
  });
});

describe('netlink and packet tables, fd links', () => {
  it('the inode is the last column', () => {
    const text = 'sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n000000000495b733 0   0          00000000 0        0        0     2        0        4       \n0000000067e646e7 4   0          00000000 0        0        0     2        0        501     ';
    expect(parseLastColumnInodes(text, 1)).toEqual([{ inode: 4, protocol: 0 }, { inode: 501, protocol: 4 }]);
  });
  it('socket:[N] links only', () => {
    expect(socketInodeOf('socket:[17512]')).toBe(17512);
    expect(socketInodeOf('anon_inode:[io_uring]')).toBeUndefined();
    expect(socketInodeOf('/tmp/socket:[1]')).toBeUndefined();
  });
});

describe('tree-facts parsers', () => {
  it('/proc/locks: POSIX and FLOCK carry the pid, OFD locks -1', () => {
    expect(parseLocks(LOCKS)).toEqual([
      { kind: 'OFDLCK', mode: 'ADVISORY', type: 'READ', pid: -1, device: 'fe:00', inode: 2148221, start: '0', end: 'EOF' },
      { kind: 'POSIX', mode: 'ADVISORY', type: 'WRITE', pid: 8597, device: 'fe:00', inode: 2148220, start: '0', end: 'EOF' },
      { kind: 'FLOCK', mode: 'ADVISORY', type: 'WRITE', pid: 8597, device: 'fe:00', inode: 2148219, start: '0', end: 'EOF' },
    ]);
  });
  it('fdinfo lock: lines; a waiter (->) holds nothing', () => {
    expect(parseLocks(FDINFO)).toMatchObject([{ kind: 'OFDLCK', pid: -1, inode: 2148221 }]);
    expect(parseLocks('1: POSIX  ADVISORY  WRITE 100 fe:00:7 0 EOF\n1: -> POSIX  ADVISORY  WRITE 200 fe:00:7 0 EOF')).toHaveLength(1);
  });
  it('status id lines, NSpid, passwd, SysV maps', () => {
    expect(parseIdLine('33\t33\t33\t33')).toEqual({ real: 33, effective: 33, saved: 33 });
    expect(parseIdLine('1000\t0\t0\t0')).toEqual({ real: 1000, effective: 0, saved: 0 });
    expect(parseNsPid('4242\t17\t1')).toEqual([4242, 17, 1]);
    expect(parsePasswd('root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n').get(33)).toBe('www-data');
    // A python3 attached to a private 1 MiB segment (shmget IPC_PRIVATE, shmat, then IPC_RMID), shmid 5.
    const maps = [
      '3bfb3000-3c056000 rw-p 00000000 00:00 0                                  [heap]',
      '7fb7e08a1000-7fb7e09a1000 rw-s 00000000 00:01 5                          /SYSV00000000 (deleted)',
      '7fb7e09a1000-7fb7e09a3000 r--p 00000000 fe:00 339490                     /usr/lib/x86_64-linux-gnu/libffi.so.8.1.2',
    ].join('\n');
    expect(sysvShmMaps(maps)).toEqual([maps.split('\n')[1]]);
  });
});
