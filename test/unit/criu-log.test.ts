// diagnoseCriuLog: from a failed criu log to the cause, a name for it and what to do. The excerpts follow criu 4.2's
// wording (file:line as in its sources); every run on this host starts with the rlimit error and ends with a summary.
import { describe, expect, it } from 'vitest';
import { diagnoseCriuLog } from '../../src/tools/criu-log.js';

const RLIMIT_LINE = "(00.000021) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted";

function dumpLog(body: string, version = '4.2.1'): string {
  return [
    `(00.000000) Version: ${version} (gitid 0)`,
    RLIMIT_LINE,
    '(00.000412) Running on host1 Linux 6.16.8-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.16.8-1 x86_64',
    '(00.001210) ========================================',
    '(00.001214) Dumping processes (pid: 4242 comm: api)',
    '(00.001216) ========================================',
    '(00.004100) Seized task 4242, state 1',
    body.trim(),
    '(00.061002) Writing stats',
    '(00.061330) Error (criu/cr-dump.c:2128): Dumping FAILED.',
    '',
  ].join('\n');
}

function restoreLog(body: string): string {
  return [
    '(00.000000) Version: 4.2.1 (gitid 0)',
    RLIMIT_LINE,
    '(00.002001) Forking task with 4242 pid (flags 0x0)',
    body.trim(),
    '(00.041000) Error (criu/cr-restore.c:2324): Restoring FAILED.',
    '',
  ].join('\n');
}

describe('diagnoseCriuLog: known causes at dump', () => {
  it('an established TCP connection without --tcp-established', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.041001) Dumping path for 4 fd via self 14 [/srv/api/app.log]
(00.041220) inet: Dumping inet socket at 5
(00.041234) Error (criu/sk-inet.c:200): inet: Connected TCP socket, consider using --tcp-established option.
(00.041240) Error (criu/cr-dump.c:1698): Dump files (pid: 4242) failed with -1
`));
    expect(d.known).toBe('tcp-established');
    expect(d.cause).toBe('inet: Connected TCP socket, consider using --tcp-established option.');
    expect(d.hint).toContain('--criu-opt --tcp-established');
    expect(d.hint).toContain('after snap looked');
    expect(d.lines).toEqual([]);
  });

  it('a known cause later in the log wins over an unknown first error, which is still shown', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.030010) Error (criu/files.c:688): Can't read link of fd 9: No such file or directory
(00.041234) Error (criu/sk-inet.c:200): inet: Connected TCP socket, consider using --tcp-established option.
`));
    expect(d.known).toBe('tcp-established');
    expect(d.cause).toBe('inet: Connected TCP socket, consider using --tcp-established option.');
    expect(d.lines).toEqual(["Can't read link of fd 9: No such file or directory"]);
  });

  it('in-flight connections on a listening socket', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.030001) inet: Dumping inet socket at 3
(00.030020) Error (criu/sk-inet.c:185): inet: In-flight connection (l) for 2a1b3c
(00.030024) Error (criu/sk-inet.c:186): inet: In-flight connections can be ignored with the --skip-in-flight option.
(00.030040) Error (criu/cr-dump.c:1698): Dump files (pid: 4242) failed with -1
`));
    expect(d.known).toBe('in-flight');
    expect(d.cause).toBe('inet: In-flight connection (l) for 2a1b3c');
    expect(d.hint).toContain('--criu-opt --skip-in-flight');
    expect(d.lines).toEqual(['inet: In-flight connections can be ignored with the --skip-in-flight option.']);
  });

  it('iptables missing for the per-connection lock (the shell says so first)', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.031100) tcp: 	Turning repair on for socket 2b3c4d
(00.031105) 	Running iptables [iptables -w -t filter -I INPUT --protocol tcp -m mark ! --mark 0xC114 --source 127.0.0.1 --sport 8080 --destination 127.0.0.1 --dport 45678 -j DROP]
sh: 1: iptables: not found
(00.031900) Error (criu/util.c:656): exited, status=127
(00.031904) Error (criu/netfilter.c:105): Iptables configuration failed
(00.031910) Error (criu/sk-tcp.c:81): tcp: Failed to lock TCP connection 2b3c4d
(00.031920) Error (criu/cr-dump.c:1698): Dump files (pid: 4242) failed with -1
`));
    expect(d.known).toBe('iptables-missing');
    expect(d.cause).toBe('sh: 1: iptables: not found');
    expect(d.hint).toContain('install iptables');
    expect(d.hint).toContain('npm run setup');
    expect(d.hint).toContain('--core-only');
    expect(d.lines).toEqual(['Iptables configuration failed', 'tcp: Failed to lock TCP connection 2b3c4d']);
  });

  it('iptables-restore missing for the namespace network lock', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.020100) Lock network
Error (criu/util.c:642): execvp("iptables-restore", ...) failed: No such file or directory
(00.020400) Error (criu/util.c:656): exited, status=1
(00.020410) Error (criu/net.c:3332): net: Locking network failed: iptables-restore returned -1. This may be connected to disabled CONFIG_NETFILTER_XT_MARK kernel build config option.
`));
    expect(d.known).toBe('iptables-missing');
    expect(d.cause).toBe('execvp("iptables-restore", ...) failed: No such file or directory');
    expect(d.lines).toHaveLength(1);
    expect(d.lines[0]).toMatch(/^net: Locking network failed: iptables-restore returned -1/);
  });

  it('iptables present but failing: its own message is the cause', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.031105) 	Running iptables [iptables -w -t filter -I INPUT --protocol tcp -m mark ! --mark 0xC114 --source 10.0.0.5 --sport 443 --destination 10.0.0.9 --dport 51234 -j DROP]
iptables v1.8.11 (nf_tables): Couldn't load match \`mark':No such file or directory
(00.031900) Error (criu/util.c:656): exited, status=2
(00.031904) Error (criu/netfilter.c:105): Iptables configuration failed
`));
    expect(d.known).toBe('iptables-missing');
    expect(d.cause).toBe("iptables v1.8.11 (nf_tables): Couldn't load match `mark':No such file or directory");
  });

  it('the limits of a task of another uid (no CAP_SYS_RESOURCE)', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.019001) Error (criu/cr-dump.c:388): Can't get rlimit 0: Operation not permitted
(00.019010) Error (criu/cr-dump.c:1737): Dump core (pid: 4242) failed with -1
`));
    expect(d.known).toBe('rlimit-capability');
    expect(d.cause).toBe("Can't get rlimit 0: Operation not permitted");
    expect(d.hint).toContain('CAP_SYS_RESOURCE');
    expect(d.hint).toContain('snap dump --core-only');
    expect(d.lines).toEqual([]);
  });

  it('an io_uring mapping (criu 4.2 calls it "Unknown shit")', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.010000) Error (criu/proc_parse.c:502): Unknown shit 600 (anon_inode:[io_uring])
(00.010010) Error (criu/cr-dump.c:1503): Collect mappings (pid: 4242) failed with -1
`));
    expect(d.known).toBe('io-uring');
    expect(d.cause).toBe('Unknown shit 600 (anon_inode:[io_uring])');
    expect(d.hint).toContain('io_uring');
    expect(d.hint).toContain('--core-only');
  });

  it('an io_uring fd is io-uring, not just an unsupported file', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.025000) Error (criu/files-ext.c:94): Can't dump file 7 of that type [600] (anon anon_inode:[io_uring])
(00.025010) Error (criu/cr-dump.c:1698): Dump files (pid: 4242) failed with -1
`));
    expect(d.known).toBe('io-uring');
  });

  it('another file criu cannot dump', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.025000) Error (criu/files-ext.c:94): Can't dump file 7 of that type [600] (anon anon_inode:[userfaultfd])
`));
    expect(d.known).toBe('unsupported-file');
    expect(d.cause).toBe("Can't dump file 7 of that type [600] (anon anon_inode:[userfaultfd])");
    expect(d.hint).toContain('--core-only');
  });

  it('SysV shared memory of the host IPC namespace', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.012000) Error (criu/cr-dump.c:477): Task 4242 with SysVIPC shmem map @7f3a2c000000 doesn't live in IPC ns
(00.012010) Error (criu/cr-dump.c:1774): Dump mappings (pid: 4242) failed with -1
`));
    expect(d.known).toBe('sysv-shm');
    expect(d.cause).toBe("Task 4242 with SysVIPC shmem map @7f3a2c000000 doesn't live in IPC ns");
    expect(d.hint).toContain('--core-only');
  });

  it('a container mount without a proper root mount', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.006100) mnt: Parsing /proc/4242/mountinfo
(00.006200) Error (criu/mount.c:753): mnt: 1034:./sys/fs/cgroup doesn't have a proper root mount
`));
    expect(d.known).toBe('mount');
    expect(d.cause).toBe("mnt: 1034:./sys/fs/cgroup doesn't have a proper root mount");
    expect(d.hint).toMatch(/container/);
    expect(d.hint).toMatch(/from the host/);
  });

  it('a file on a mount criu cannot look up', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.022000) Error (criu/files-reg.c:1790): Can't lookup mount=1456 for fd=3 path=/data/app.log
(00.022010) Error (criu/cr-dump.c:1698): Dump files (pid: 4242) failed with -1
`));
    expect(d.known).toBe('mount');
    expect(d.cause).toBe("Can't lookup mount=1456 for fd=3 path=/data/app.log");
  });

  it('mnt: info lines, which every run prints, are not a mount failure', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.006100) mnt: Parsing /proc/4242/mountinfo
(00.006150) mnt: 	mount 1034 sys/fs/cgroup (cgroup2)
(00.031000) Error (criu/parasite-syscall.c:400): Can't dump thread for pid 4242
`));
    expect(d.known).toBeUndefined();
    expect(d.hint).toBeUndefined();
    expect(d.cause).toBe("Can't dump thread for pid 4242");
  });

  it('a socket whose other end is outside the tree (a worker of a service)', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.022000) unix: Dumping unix socket at 4
(00.022010) unix: 	Runaway socket: ino 0x7a69 peer_ino 0x7a68 family    1 type    1 state  1 name (null)
(00.022020) Error (criu/sk-unix.c:874): unix: External socket is used. Consider using --ext-unix-sk option.
(00.022030) Error (criu/cr-dump.c:1698): Dump files (pid: 4243) failed with -1
`));
    expect(d.known).toBe('external-socket');
    expect(d.cause).toBe('unix: External socket is used. Consider using --ext-unix-sk option.');
    expect(d.hint).toContain('root process of the tree');
    expect(d.hint).toContain('--criu-opt --ext-unix-sk');
  });

  it('--ext-unix-sk given, but the external peer is a stream socket', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.022010) unix: 	Ext stream not supported: ino 0x7a69 peer_ino 0x7a68 family    1 type    1 state  1 name /run/api.sock
(00.022020) Error (criu/sk-unix.c:882): unix: Can't dump half of stream unix connection. name: (null); peer name: /run/api.sock
`));
    expect(d.known).toBe('external-unix-socket');
    expect(d.cause).toBe("unix: Can't dump half of stream unix connection. name: (null); peer name: /run/api.sock");
    expect(d.hint).toContain('root process of the tree');
  });

  it('not a session leader', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.004500) Error (criu/pstree.c:304): The root process 4242 is not a session leader. Consider using --shell-job option
`));
    expect(d.known).toBe('shell-job');
    expect(d.cause).toBe('The root process 4242 is not a session leader. Consider using --shell-job option');
    expect(d.hint).toContain('--criu-opt --shell-job');
  });

  it('a terminal of a session outside the tree', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.027000) Error (criu/tty.c:1830): tty: Found dangling tty with sid 3100 pgid 4242 (pts) on peer fd 0.
(00.027010) Error (criu/cr-dump.c:1698): Dump files (pid: 4242) failed with -1
`));
    expect(d.known).toBe('shell-job');
    expect(d.hint).toContain('--criu-opt --shell-job');
  });

  it('criu 4.1 on a 6.16 kernel cannot read SO_PASSCRED of an AF_INET socket (criu issue #2705)', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.118198) Error (criu/sockets.c:628): sockets: Can't get 1:16 opt: Operation not supported
(00.118203) Error (criu/sockets.c:628): sockets: Can't get 1:34 opt: Operation not supported
(00.118234) Error (criu/cr-dump.c:1681): Dump files (pid: 4242) failed with -1
`, '4.1.1'));
    expect(d.known).toBe('inet-socket-criu-too-old');
    expect(d.cause).toBe("sockets: Can't get 1:16 opt: Operation not supported");
    expect(d.hint).toContain('criu 4.1.1');
    expect(d.hint).toContain('criu >= 4.2');
    expect(d.hint).toContain('npm run setup');
    expect(d.lines).toEqual(["sockets: Can't get 1:34 opt: Operation not supported"]);
  });

  it('file locks without --file-locks', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.050000) Error (criu/file-lock.c:110): Some file locks are hold by dumping tasks! You can try --file-locks to dump them.
`));
    expect(d.known).toBe('file-locks');
    expect(d.cause).toBe('Some file locks are hold by dumping tasks! You can try --file-locks to dump them.');
    expect(d.hint).toContain('--criu-opt --file-locks');
  });

  it('Go MPTCP listeners', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.030000) Error (criu/sk-inet.c:138): inet: Unsupported proto 262 for socket 3f2e1d
(00.030001) Error (criu/sk-inet.c:140): inet: For Go programs, consider using "GODEBUG=multipathtcp=0" to disable MPTCP
`));
    expect(d.known).toBe('mptcp');
    expect(d.cause).toBe('inet: Unsupported proto 262 for socket 3f2e1d');
    expect(d.hint).toContain('GODEBUG=multipathtcp=0');
  });

  it('the task exited while criu seized it', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.003900) Warn  (compel/src/lib/infect.c:131): Unable to interrupt task: 4242 (No such process)
`));
    expect(d.known).toBe('task-exited');
    expect(d.cause).toBe('Unable to interrupt task: 4242 (No such process)');
    expect(d.hint).toMatch(/still runs/);
  });

  it('a task that could not be seized and is no zombie', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.003950) Error (compel/src/lib/infect.c:261): Unseizable non-zombie 4250 found, state S, err -1/10
`));
    expect(d.known).toBe('task-exited');
    expect(d.cause).toBe('Unseizable non-zombie 4250 found, state S, err -1/10');
  });

  it('another tracer holds the task', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.003900) Warn  (compel/src/lib/infect.c:131): Unable to interrupt task: 4242 (Operation not permitted)
`));
    expect(d.known).toBe('seize-denied');
    expect(d.hint).toMatch(/gdb, strace/);
  });

  it('a thread that exited during the seize does not hide the real error', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.003900) Warn  (compel/src/lib/infect.c:131): Unable to interrupt task: 4251 (No such process)
(00.031000) Error (criu/parasite-syscall.c:400): Can't dump thread for pid 4242
`));
    expect(d.known).toBeUndefined();
    expect(d.cause).toBe("Can't dump thread for pid 4242");
  });
});

describe('diagnoseCriuLog: known causes at restore', () => {
  it('a pid the bundle needs is taken', () => {
    const d = diagnoseCriuLog(restoreLog(`
(00.004150) Error (criu/cr-restore.c:1230): Can't fork for 4242: File exists
`));
    expect(d.known).toBe('pid-taken');
    expect(d.cause).toBe("Can't fork for 4242: File exists");
    expect(d.hint).toContain('pid 4242');
    expect(d.hint).toContain('snap restore --new-pidns');
    expect(d.lines).toEqual([]);
  });

  it('a file changed size since the dump (lines logged by the restored task carry its pid)', () => {
    const d = diagnoseCriuLog(restoreLog(`
(00.021000)   4242: Error (criu/files-reg.c:2175): File srv/api/app.log has bad size 1048576 (expect 524288)
(00.021010)   4242: Error (criu/files.c:1221): Unable to open fd=3 id=0x9
(00.030000) Error (criu/cr-restore.c:1258): 4242 exited, status=1
(00.030005) Error (criu/cr-restore.c:2297): Killing processes because of failure on restore.
The Network was unlocked so some data or a connection may have been lost.
`));
    expect(d.known).toBe('file-size-changed');
    expect(d.cause).toBe('File srv/api/app.log has bad size 1048576 (expect 524288)');
    expect(d.hint).toContain('changed size since the dump');
    expect(d.lines).toEqual(['Unable to open fd=3 id=0x9']);
  });

  it('an established connection in the images, restored without --tcp-established', () => {
    const d = diagnoseCriuLog(restoreLog(`
(00.025000)   4242: Error (criu/sk-inet.c:912): inet: Connected TCP socket in image
`));
    expect(d.known).toBe('tcp-established');
    expect(d.cause).toBe('inet: Connected TCP socket in image');
    expect(d.hint).toContain('--tcp-established');
  });

  it('an external unix socket in the images', () => {
    const d = diagnoseCriuLog(restoreLog(`
(00.025000)   4242: Error (criu/sk-unix.c:1912): unix: External socket found in image. Consider using the --ext-unix-sk option to allow restoring it.
`));
    expect(d.known).toBe('external-unix-socket');
    expect(d.hint).toContain('--ext-unix-sk');
  });
});

describe('diagnoseCriuLog: lines that never say why', () => {
  it('the rlimit line and the generic summaries are never the cause', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.019010) Error (criu/cr-dump.c:1698): Dump files (pid: 4242) failed with -1
`));
    expect(d).toEqual({ cause: 'criu gave no error line', lines: [] });
  });

  it('any RLIMIT_NOFILE line and the restore summaries are skipped for the first real error', () => {
    const d = diagnoseCriuLog([
      "(00.000030) Error (criu/servicefd.c:91): rlimit: Can't raise RLIMIT_NOFILE: Operation not permitted",
      "(00.004150) Error (criu/cr-restore.c:1600): Can't open /proc/self/ns/net: Permission denied",
      '(00.030000) Error (criu/cr-restore.c:1258): 4242 exited, status=1',
      '(00.040000) Error (criu/cr-restore.c:2324): Restoring FAILED.',
    ].join('\n'));
    expect(d.cause).toBe("Can't open /proc/self/ns/net: Permission denied");
    expect(d.known).toBeUndefined();
    expect(d.hint).toBeUndefined();
    expect(d.lines).toEqual([]);
  });

  it('an unknown error: the first one is the cause, at most 4 others follow in log order, repeats once', () => {
    const d = diagnoseCriuLog(dumpLog(`
(00.020000) Error (criu/parasite-syscall.c:400): Can't dump thread for pid 4242
(00.020001) Error (criu/cr-dump.c:988): Can't dump thread for pid 4242
(00.020002) Error (criu/a.c:1): second
(00.020003) Error (criu/a.c:2): third
(00.020004) Error (criu/a.c:3): second
(00.020005) Error (criu/a.c:4): fourth
(00.020006) Error (criu/a.c:5): fifth
(00.020007) Error (criu/a.c:6): sixth
`));
    expect(d.cause).toBe("Can't dump thread for pid 4242");
    expect(d.known).toBeUndefined();
    expect(d.lines).toEqual(['second', 'third', 'fourth', 'fifth']);
  });

  it('an empty log', () => {
    expect(diagnoseCriuLog('')).toEqual({ cause: 'criu gave no error line', lines: [] });
  });

  it('a log with Windows line ends still reads', () => {
    const d = diagnoseCriuLog(`${RLIMIT_LINE}\r\n(00.004150) Error (criu/cr-restore.c:1230): Can't fork for 77: File exists\r\n`);
    expect(d.cause).toBe("Can't fork for 77: File exists");
    expect(d.known).toBe('pid-taken');
  });
});
