// findRefusals and chooseCriuOptions over hand-made TreeFacts: every refusal and every criu option, and the cases that
// must not trigger them. No process is involved: the facts are what readTreeFacts would have read.
import { describe, expect, it } from 'vitest';
import { chooseCriuOptions } from '../../src/process/criu-options.js';
import { findRefusals, sharingAncestors, shellJobNeeded, type RefusalCode } from '../../src/process/dump-plan.js';
import type { HeldSocket } from '../../src/process/sockets.js';
import type { AncestorFacts, IdSet, ProcessFacts, TreeFacts } from '../../src/process/tree-facts.js';

const HOST_NS = {
  pid: 'pid:[4026531836]',
  ipc: 'ipc:[4026531839]',
  net: 'net:[4026531833]',
  mnt: 'mnt:[4026531832]',
  user: 'user:[4026531837]',
};
const ids = (n: number): IdSet => ({ real: n, effective: n, saved: n });
const found = (path: string) => ({ path, onPath: true });

function proc(pid: number, over: Partial<ProcessFacts> = {}): ProcessFacts {
  return {
    pid,
    ppid: 1,
    comm: 'app',
    session: pid,
    ttyNr: 0,
    uid: ids(0),
    gid: ids(0),
    nsPid: [pid],
    ns: { ...HOST_NS },
    sysvShm: [],
    ioUringFds: [],
    sockets: [],
    locks: [],
    ...over,
  };
}

function tree(processes: ProcessFacts[], over: Partial<TreeFacts> = {}): TreeFacts {
  return {
    rootPid: processes[0]!.pid,
    processes,
    snap: { pid: 999, uid: ids(0), gid: ids(0), capEff: '000001ffffffffff', capSysResource: true, ns: { ...HOST_NS } },
    rootPpid: processes[0]!.ppid,
    ancestors: [],
    unixPeers: 'ss',
    tools: {
      iptables: found('/usr/sbin/iptables'),
      ip6tables: found('/usr/sbin/ip6tables'),
      'iptables-restore': found('/usr/sbin/iptables-restore'),
      'ip6tables-restore': found('/usr/sbin/ip6tables-restore'),
      nft: null,
    },
    hostIpv6: true,
    userNames: { 33: 'www-data' },
    notes: [],
    ...over,
  };
}

const noSysResource = (f: TreeFacts): TreeFacts => ({ ...f, snap: { ...f.snap, capEff: '000001fffeffffff', capSysResource: false } });

function tcp(fd: number, inode: number, state: string, local: string, remote = '0.0.0.0:0', extra: Partial<HeldSocket> = {}): HeldSocket {
  const port = (a: string) => Number(a.slice(a.lastIndexOf(':') + 1));
  return {
    fd, inode, family: local.startsWith('[') ? 'inet6' : 'inet', proto: 'tcp', state, local, remote,
    localPort: port(local), remotePort: port(remote), ...(state === 'LISTEN' ? { acceptBacklog: 0 } : {}), ...extra,
  };
}
const listener = (fd: number, inode: number, local = '0.0.0.0:80', backlog = 0) => tcp(fd, inode, 'LISTEN', local, '0.0.0.0:0', { acceptBacklog: backlog });
const conn = (fd: number, inode: number, local = '10.0.0.5:80', remote = '10.0.0.9:51000', state = 'ESTABLISHED') => tcp(fd, inode, state, local, remote);
function unix(fd: number, inode: number, proto: string, extra: Partial<HeldSocket> = {}): HeldSocket {
  return { fd, inode, family: 'unix', proto, state: 'CONNECTED', local: extra.path ?? '', remote: extra.peerPath ?? '', ...extra };
}
const ancestor = (pid: number, ppid: number, comm: string, sockets: HeldSocket[]): AncestorFacts => ({ pid, ppid, comm, sockets });

const codes = (f: TreeFacts) => findRefusals(f).map((r) => [r.pid, r.code]);

describe('findRefusals', () => {
  it('nothing to refuse for a plain single process', () => {
    expect(findRefusals(tree([proc(100)]))).toEqual([]);
    expect(findRefusals(noSysResource(tree([proc(100)])))).toEqual([]);
  });

  const cases: { name: string; facts: TreeFacts; expect: [number, RefusalCode][] }[] = [
    { name: 'an io_uring fd', facts: tree([proc(100, { ioUringFds: [4, 12] })]), expect: [[100, 'io-uring']] },
    { name: 'io_uring in a child only', facts: tree([proc(100), proc(101, { ppid: 100, ioUringFds: [7] })]), expect: [[101, 'io-uring']] },
    {
      name: 'SysV shm in the host IPC namespace',
      facts: tree([proc(100, { comm: 'postgres', sysvShm: ['7fb7e08a1000-7fb7e09a1000 rw-s 00000000 00:01 5  /SYSV0052e2c1 (deleted)'] })]),
      expect: [[100, 'sysv-shm']],
    },
    {
      name: 'SysV shm in an IPC namespace of the tree (criu dumps it whole)',
      facts: tree([proc(100, { ns: { ...HOST_NS, ipc: 'ipc:[4026532500]' }, sysvShm: ['7f00-7f01 rw-s 00000000 00:01 5  /SYSV00000000 (deleted)'] })]),
      expect: [],
    },
    {
      name: 'a child of another uid without CAP_SYS_RESOURCE',
      facts: noSysResource(tree([proc(100, { comm: 'nginx' }), proc(101, { ppid: 100, comm: 'nginx', uid: ids(33), gid: ids(33) })])),
      expect: [[101, 'capability']],
    },
    {
      name: 'a child of another uid with CAP_SYS_RESOURCE',
      facts: tree([proc(100, { comm: 'nginx' }), proc(101, { ppid: 100, comm: 'nginx', uid: ids(33), gid: ids(33) })]),
      expect: [],
    },
    {
      name: 'only the saved uid differs (a setuid program that dropped to root): prlimit checks all three',
      facts: noSysResource(tree([proc(100, { uid: { real: 0, effective: 0, saved: 33 } })])),
      expect: [[100, 'capability']],
    },
    {
      name: 'only the gid differs',
      facts: noSysResource(tree([proc(100, { gid: { real: 0, effective: 50, saved: 50 } })])),
      expect: [[100, 'capability']],
    },
    {
      name: 'a child in a nested PID namespace',
      facts: tree([proc(100), proc(201, { ppid: 100, nsPid: [201, 1], ns: { ...HOST_NS, pid: 'pid:[4026532600]' } })]),
      expect: [[201, 'nested-pidns']],
    },
    {
      name: 'a root that is itself in a PID namespace, children in the same one',
      facts: tree([proc(100, { nsPid: [100, 1] }), proc(101, { ppid: 100, nsPid: [101, 2] })]),
      expect: [],
    },
    {
      name: 'a worker sharing its parent\'s listening socket',
      facts: tree([proc(101, { ppid: 100, comm: 'nginx', sockets: [listener(6, 5001)] })], {
        ancestors: [ancestor(100, 1, 'nginx', [listener(6, 5001), unix(3, 5003, 'stream')])],
      }),
      expect: [[101, 'not-tree-root']],
    },
    {
      name: 'a child whose parent shares nothing with it',
      facts: tree([proc(101, { ppid: 100, sockets: [listener(3, 6001)] })], { ancestors: [ancestor(100, 1, 'bash', [unix(3, 6002, 'stream')])] }),
      expect: [],
    },
    {
      name: 'a unix stream connected to a socket nobody in the tree holds (a journal stdout)',
      facts: tree([proc(100, { sockets: [unix(1, 7001, 'stream', { peer: 7000, peerPath: '/run/systemd/journal/stdout' })] })]),
      expect: [[100, 'external-unix']],
    },
    {
      name: 'a unix stream whose peer is in the tree',
      facts: tree([proc(100, { sockets: [unix(3, 7001, 'stream', { peer: 7002 })] }), proc(101, { ppid: 100, sockets: [unix(3, 7002, 'stream', { peer: 7001 })] })]),
      expect: [],
    },
    {
      name: 'a connected dgram to a named socket outside (/dev/log): --ext-unix-sk handles it',
      facts: tree([proc(100, { sockets: [unix(3, 7001, 'dgram', { peer: 7000, peerPath: '/dev/log' })] })]),
      expect: [],
    },
    {
      name: 'a connected dgram to a name-less socket outside',
      facts: tree([proc(100, { sockets: [unix(3, 7001, 'dgram', { peer: 7000 })] })]),
      expect: [[100, 'external-unix']],
    },
    {
      name: 'a connection with no iptables installed',
      facts: tree([proc(100, { sockets: [conn(4, 8001)] })], { tools: { iptables: null, ip6tables: null, 'iptables-restore': null, 'ip6tables-restore': null, nft: found('/usr/sbin/nft') } }),
      expect: [[100, 'tool-missing']],
    },
    {
      name: 'a listener only, no iptables: criu locks connections, not listeners, in the host netns',
      facts: tree([proc(100, { sockets: [listener(3, 8001)] })], { tools: { iptables: null, ip6tables: null, 'iptables-restore': null, 'ip6tables-restore': null, nft: null } }),
      expect: [],
    },
    {
      name: 'an IPv6 connection needs ip6tables',
      facts: tree([proc(100, { sockets: [conn(4, 8001, '[2001:db8::5]:443', '[2001:db8::9]:50000')] })], {
        tools: { iptables: found('/usr/sbin/iptables'), ip6tables: null, 'iptables-restore': null, 'ip6tables-restore': null, nft: null },
      }),
      expect: [[100, 'tool-missing']],
    },
    {
      name: 'an IPv4-mapped connection is locked with iptables',
      facts: tree([proc(100, { sockets: [conn(4, 8001, '[::ffff:10.0.0.5]:443', '[::ffff:10.0.0.9]:50000')] })], {
        tools: { iptables: found('/usr/sbin/iptables'), ip6tables: null, 'iptables-restore': null, 'ip6tables-restore': null, nft: null },
      }),
      expect: [],
    },
    {
      name: 'a tree in its own netns: iptables-restore even without connections',
      facts: tree([proc(100, { ns: { ...HOST_NS, net: 'net:[4026532700]' } })], {
        tools: { iptables: found('/usr/sbin/iptables'), ip6tables: found('/usr/sbin/ip6tables'), 'iptables-restore': null, 'ip6tables-restore': found('/usr/sbin/ip6tables-restore'), nft: null },
      }),
      expect: [[100, 'tool-missing']],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(codes(c.facts)).toEqual(c.expect);
    });
  }

  it('every refusal names a cause and a hint; a cause criu cannot handle offers --core-only of the root', () => {
    for (const c of cases) {
      for (const r of findRefusals(c.facts)) {
        expect(r.cause.length).toBeGreaterThan(20);
        expect(r.hint).toContain(`snap dump --core-only ${c.facts.rootPid}`);
        expect(r.comm).toBe(c.facts.processes.find((p) => p.pid === r.pid)?.comm);
      }
    }
  });

  it('io_uring: the fds and the reason', () => {
    const [r] = findRefusals(tree([proc(100, { comm: 'node', ioUringFds: [4, 12] })]));
    expect(r?.cause).toContain('fd 4, 12');
    expect(r?.cause).toContain('criu cannot checkpoint io_uring');
  });

  it('capability: names the uid and the user, and the ways out', () => {
    const f = noSysResource(tree([proc(100, { comm: 'nginx' }), proc(101, { ppid: 100, comm: 'nginx', uid: ids(33), gid: ids(33) })]));
    const [r] = findRefusals(f);
    expect(r?.cause).toContain('uid 33 (www-data)');
    expect(r?.cause).toContain('gid 33');
    expect(r?.cause).toContain('CAP_SYS_RESOURCE');
    expect(r?.cause).toContain("Can't get rlimit 0: Operation not permitted");
    expect(r?.hint).toContain("run the service's workers as snap's user (uid 0)");
    expect(r?.hint).toContain('CAP_SYS_RESOURCE');
    expect(r?.hint).toContain('snap dump --core-only 100');
  });

  it('sysv-shm: names the segment', () => {
    const [r] = findRefusals(tree([proc(100, { comm: 'postgres', sysvShm: ['7fb7e08a1000-7fb7e09a1000 rw-s 00000000 00:01 5  /SYSV0052e2c1 (deleted)'] })]));
    expect(r?.cause).toContain('key 0x0052e2c1 shmid 5');
    expect(r?.cause).toContain('ipc:[4026531839]');
  });

  it('nested-pidns: points at the namespace init when it is in the tree', () => {
    const nested = { ...HOST_NS, pid: 'pid:[4026532600]' };
    const f = tree([proc(100), proc(201, { ppid: 100, nsPid: [201, 1], ns: nested }), proc(202, { ppid: 201, nsPid: [202, 2], ns: nested })]);
    const refusals = findRefusals(f);
    expect(refusals.map((r) => r.pid)).toEqual([201, 202]);
    expect(refusals[1]?.hint).toContain('snap dump 201');
    expect(refusals[1]?.cause).toContain('NSpid 202 2');
  });

  it('not-tree-root: a worker sharing its parent\'s listening socket names the parent', () => {
    const f = tree([proc(101, { ppid: 100, comm: 'nginx', sockets: [listener(6, 5001, '0.0.0.0:80')] })], {
      ancestors: [ancestor(100, 1, 'nginx', [listener(6, 5001, '0.0.0.0:80')])],
    });
    const [r] = findRefusals(f);
    expect(r).toMatchObject({ pid: 101, code: 'not-tree-root' });
    expect(r?.cause).toContain('its parent 100 (nginx) shares tcp 0.0.0.0:80 LISTEN');
    expect(r?.cause).toContain('External socket is used');
    expect(r?.hint).toContain('snap dump 100 (nginx)');
  });

  it('not-tree-root: walks up while each parent shares a socket with the one below, and names the topmost', () => {
    const f = tree([proc(102, { ppid: 101, comm: 'worker', sockets: [unix(3, 9002, 'stream', { peer: 9001 })] })], {
      ancestors: [
        ancestor(101, 100, 'master', [unix(3, 9001, 'stream', { peer: 9002 }), listener(4, 9010)]),
        ancestor(100, 50, 'supervisor', [listener(4, 9010)]),
        ancestor(50, 1, 'sshd', [unix(3, 9020, 'stream')]),
      ],
    });
    expect(sharingAncestors(f).map((a) => a.pid)).toEqual([101, 100]);
    const [r] = findRefusals(f);
    expect(r?.cause).toContain('its parent 101 (master)');
    expect(r?.cause).toContain('up to 100 (supervisor)');
    expect(r?.hint).toContain('snap dump 100 (supervisor)');
    // The channel to the parent is that refusal's business: no second, external-unix one.
    expect(findRefusals(f).map((r) => r.code)).toEqual(['not-tree-root']);
  });

  it('tool-missing: a tool only outside PATH is named with its directory', () => {
    const f = tree([proc(100, { sockets: [conn(4, 8001)] })], {
      tools: { iptables: { path: '/usr/sbin/iptables', onPath: false }, ip6tables: null, 'iptables-restore': null, 'ip6tables-restore': null, nft: null },
    });
    const [r] = findRefusals(f);
    expect(r?.code).toBe('tool-missing');
    expect(r?.cause).toContain('not on snap\'s PATH');
    expect(r?.hint).toContain('add /usr/sbin to PATH');
  });

  it('tool-missing: the hint says how to install iptables', () => {
    const f = tree([proc(100, { sockets: [conn(4, 8001)] })], { tools: { iptables: null, ip6tables: null, 'iptables-restore': null, 'ip6tables-restore': null, nft: null } });
    expect(findRefusals(f)[0]?.hint).toMatch(/install iptables.*--core-only 100/);
  });

  it('tool-missing: not when the person chose --network-lock nftables or skip', () => {
    const f = tree([proc(100, { sockets: [conn(4, 8001)] })], { tools: { iptables: null, ip6tables: null, 'iptables-restore': null, 'ip6tables-restore': null, nft: null } });
    expect(findRefusals(f, { criuExtraOptions: ['--network-lock=nftables'] })).toEqual([]);
    expect(findRefusals(f, { criuExtraOptions: ['--network-lock', 'skip'] })).toEqual([]);
    expect(findRefusals(f, { criuExtraOptions: ['--network-lock=iptables'] }).map((r) => r.code)).toEqual(['tool-missing']);
  });

  it('several causes are all reported, the root first', () => {
    const f = noSysResource(
      tree([proc(101, { ppid: 100, ioUringFds: [4], sockets: [listener(5, 5001)] }), proc(102, { ppid: 101, uid: ids(33) })], {
        ancestors: [ancestor(100, 1, 'master', [listener(5, 5001)])],
      }),
    );
    expect(codes(f)).toEqual([
      [101, 'not-tree-root'],
      [101, 'io-uring'],
      [102, 'capability'],
    ]);
  });
});

describe('chooseCriuOptions', () => {
  const cases: { name: string; facts: TreeFacts; options: string[] }[] = [
    { name: 'a plain single process', facts: tree([proc(100)]), options: [] },
    { name: 'not a session leader', facts: tree([proc(100, { session: 50 })]), options: ['--shell-job'] },
    { name: 'a controlling terminal', facts: tree([proc(100, { ttyNr: 34816 })]), options: ['--shell-job'] },
    { name: 'an ESTABLISHED connection', facts: tree([proc(100, { sockets: [conn(4, 1)] })]), options: ['--tcp-established'] },
    { name: 'a SYN_SENT connect in progress (libsoccr dumps it)', facts: tree([proc(100, { sockets: [conn(4, 1, '10.0.0.5:40000', '10.0.0.9:5432', 'SYN_SENT')] })]), options: ['--tcp-established'] },
    { name: 'a CLOSE_WAIT connection', facts: tree([proc(100, { sockets: [conn(4, 1, '10.0.0.5:80', '10.0.0.9:5000', 'CLOSE_WAIT')] })]), options: ['--tcp-established'] },
    { name: 'a closed TCP socket', facts: tree([proc(100, { sockets: [tcp(4, 1, 'CLOSE', '0.0.0.0:0')] })]), options: [] },
    {
      name: 'a connected UDP socket is not a TCP connection',
      facts: tree([proc(100, { sockets: [{ ...conn(4, 1, '10.0.0.5:5353', '10.0.0.1:53'), proto: 'udp' }] })]),
      options: [],
    },
    // A connection accepted between the look and the stop is established: criu needs --tcp-established for it.
    { name: 'a LISTEN socket', facts: tree([proc(100, { sockets: [listener(3, 1, '127.0.0.1:8080')] })]), options: ['--tcp-established', '--skip-in-flight'] },
    {
      name: 'a connected dgram to /dev/log outside the tree',
      facts: tree([proc(100, { sockets: [unix(3, 7001, 'dgram', { peer: 7000, peerPath: '/dev/log' })] })]),
      options: ['--ext-unix-sk'],
    },
    {
      name: 'a dgram socketpair inside the tree',
      facts: tree([proc(100, { sockets: [unix(3, 7001, 'dgram', { peer: 7002 }), unix(4, 7002, 'dgram', { peer: 7001 })] })]),
      options: [],
    },
    {
      name: 'peers unknown (no ss): a connected dgram gets the option on the chance',
      facts: tree([proc(100, { sockets: [unix(3, 7001, 'dgram')] })], { unixPeers: 'unknown' }),
      options: ['--ext-unix-sk'],
    },
    {
      name: 'a POSIX lock',
      facts: tree([proc(100, { locks: [{ kind: 'POSIX', mode: 'ADVISORY', type: 'WRITE', pid: 100, device: 'fe:00', inode: 2148220, start: '0', end: 'EOF', fd: 4 }] })]),
      options: ['--file-locks'],
    },
    {
      name: 'an OFD lock (pid -1 in /proc/locks, seen on the fd)',
      facts: tree([proc(100), proc(101, { ppid: 100, locks: [{ kind: 'OFDLCK', mode: 'ADVISORY', type: 'READ', pid: -1, device: 'fe:00', inode: 2148221, start: '0', end: 'EOF', fd: 5 }] })]),
      options: ['--file-locks'],
    },
    {
      name: 'everything at once, in a stable order',
      facts: tree([
        proc(100, { session: 1, sockets: [listener(3, 1), conn(4, 2)], locks: [{ kind: 'FLOCK', mode: 'ADVISORY', type: 'WRITE', pid: 100, device: 'fe:00', inode: 5, start: '0', end: 'EOF' }] }),
        proc(101, { ppid: 100, sockets: [unix(3, 7001, 'dgram', { peer: 7000, peerPath: '/dev/log' })] }),
      ]),
      options: ['--shell-job', '--tcp-established', '--skip-in-flight', '--ext-unix-sk', '--file-locks'],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const plan = chooseCriuOptions(c.facts);
      expect(plan.options).toEqual(c.options);
      expect(plan.reasons.map((r) => r.option)).toEqual(c.options);
    });
  }

  it('--tcp-established names a connection and the count', () => {
    const f = tree([proc(100, { comm: 'api', sockets: [conn(4, 1, '10.0.0.5:80', '10.0.0.9:51000'), conn(5, 2, '10.0.0.5:80', '10.0.0.7:41000')] }), proc(101, { ppid: 100, sockets: [conn(3, 3)] })]);
    const r = chooseCriuOptions(f).reasons[0]!;
    expect(r.reason).toContain('3 connected TCP sockets');
    expect(r.reason).toContain('100 (api) 10.0.0.5:80->10.0.0.9:51000 (ESTABLISHED)');
  });

  it('--skip-in-flight names the listening address and what waits in the queue', () => {
    const f = tree([proc(100, { comm: 'python3', sockets: [listener(3, 1, '127.0.0.1:18734', 2)] })]);
    const r = chooseCriuOptions(f).reasons.find((x) => x.option === '--skip-in-flight')!;
    expect(chooseCriuOptions(f).reasons.find((x) => x.option === '--tcp-established')?.reason).toContain('a connection it accepts between this look and the stop');
    expect(r.reason).toContain('100 (python3) listens on 127.0.0.1:18734');
    expect(r.reason).toContain('2 connections waiting');
    expect(r.reason).toContain('the live process');
  });

  it('a listener a worker inherited is one socket, not two', () => {
    const f = tree([proc(100, { comm: 'nginx', sockets: [listener(6, 5001, '0.0.0.0:80', 3)] }), proc(101, { ppid: 100, sockets: [listener(6, 5001, '0.0.0.0:80', 3)] })]);
    const r = chooseCriuOptions(f).reasons.find((x) => x.option === '--skip-in-flight')!;
    expect(r.reason).not.toContain('more listening socket');
    expect(r.reason).toContain('3 connections waiting');
  });

  it('--ext-unix-sk names the socket and its peer', () => {
    const f = tree([proc(100, { comm: 'app', sockets: [unix(3, 7001, 'dgram', { peer: 7000, peerPath: '/dev/log' })] })]);
    expect(chooseCriuOptions(f).reasons[0]?.reason).toContain('100 (app) has a unix dgram socket [7001] connected to /dev/log (fd 3)');
  });

  it('--file-locks names the process and the lock type', () => {
    const f = tree([proc(100, { comm: 'sqlite', locks: [{ kind: 'POSIX', mode: 'ADVISORY', type: 'WRITE', pid: 100, device: 'fe:00', inode: 42, start: '0', end: 'EOF', fd: 4 }] })]);
    expect(chooseCriuOptions(f).reasons[0]?.reason).toContain('100 (sqlite) holds a POSIX WRITE lock on inode 42 (device fe:00, fd 4)');
  });

  it('--shell-job says which of the two it is', () => {
    expect(chooseCriuOptions(tree([proc(100, { session: 50 })])).reasons[0]?.reason).toContain("not its session's leader (session 50)");
    expect(chooseCriuOptions(tree([proc(100, { ttyNr: 34816 })])).reasons[0]?.reason).toContain('controlling terminal (tty_nr 34816)');
  });
});

describe('shellJobNeeded (the rule src/pipelines/dump.ts had)', () => {
  it('session leader without a terminal: no', () => expect(shellJobNeeded({ pid: 10, session: 10, ttyNr: 0 })).toBe(false));
  it('not the leader: yes', () => expect(shellJobNeeded({ pid: 10, session: 9, ttyNr: 0 })).toBe(true));
  it('a terminal: yes', () => expect(shellJobNeeded({ pid: 10, session: 10, ttyNr: 34816 })).toBe(true));
});
