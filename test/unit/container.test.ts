// Which of a container's mounts criu must be told are external, and where each is on the host: decided from
// mountinfo text alone (lines as a runc container on cgroup v1 shows them). Which files its processes hold open on
// host mounts the container does not see (criu's "Can't lookup mount"): decided from fd links and fdinfo's mnt_id.
import { describe, expect, it } from 'vitest';
import { describeHostFile, findHostFiles, parseFdInfoMntId, parseMountInfo, planContainer, type ContainerProcess } from '../../src/process/container.js';

const container = parseMountInfo(`67 45 254:0 /tmp/rc/bundle/rootfs / rw,relatime - ext4 /dev/vda rw
68 67 0:40 / /proc rw,relatime - proc proc rw
69 67 0:41 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
73 67 0:44 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
74 73 0:45 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
75 74 0:28 /rc1 /sys/fs/cgroup/cpu ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu
78 74 0:31 /process_api/f5ab/rc1 /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
46 68 0:40 /bus /proc/bus ro,relatime - proc proc rw
51 68 0:41 /null /proc/keys rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
90 67 254:0 /srv/data\\040files /data rw,relatime - ext4 /dev/vda rw`);

const host = parseMountInfo(`22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 30 0:31 /process_api /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory`);

describe('planContainer', () => {
  it('the root on the host, and as external exactly the mounts bound in from the host (cgroups, a volume), each placed on the host', () => {
    const plan = planContainer(container, host);
    expect(plan.problems).toEqual([]);
    expect(plan.rootfs).toBe('/tmp/rc/bundle/rootfs');
    expect(plan.externalMounts).toEqual([
      { key: '/sys/fs/cgroup/cpu', hostPath: '/sys/fs/cgroup/cpu/rc1', fstype: 'cgroup' },
      { key: '/sys/fs/cgroup/memory', hostPath: '/sys/fs/cgroup/memory/f5ab/rc1', fstype: 'cgroup' },
      { key: '/data', hostPath: '/srv/data files', fstype: 'ext4' },
    ]);
  });

  it('a mount from a filesystem the host does not show is a problem, named', () => {
    const plan = planContainer(container, host.filter((m) => m.dev !== '0:31'));
    expect(plan.problems).toEqual(['mount /sys/fs/cgroup/memory (cgroup) comes from a filesystem the host does not show']);
  });
});

describe('findHostFiles', () => {
  const hostMounts = parseMountInfo(`22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
24 22 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw
26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu`);
  const inContainer = new Set(container.map((m) => m.id));
  const init = (fds: ContainerProcess['fds']): ContainerProcess => ({ pid: 4100, comm: 'sh', mountIds: inContainer, fds });

  it('reads mnt_id from fdinfo, and nothing on a kernel that does not show it', () => {
    expect(parseFdInfoMntId('pos:\t0\nflags:\t0100001\nmnt_id:\t27\nino:\t1835\n')).toBe(27);
    expect(parseFdInfoMntId('pos:\t0\nflags:\t02\n')).toBeUndefined();
  });

  it('stdout and stderr on a host file (runc run -d >log 2>&1): one problem naming the process, fd 1, the file and its mount; the files inside are not', () => {
    const found = findHostFiles(
      [
        init([
          { fd: 0, link: '/dev/null', mntId: 69 }, // the container's own /dev
          { fd: 1, link: '/var/log/box/out.log', mntId: 22 },
          { fd: 2, link: '/var/log/box/out.log', mntId: 22 },
          { fd: 3, link: '/tick (deleted)', mntId: 67 }, // a fifo on the container's root
          { fd: 4, link: 'pipe:[1564773]' },
          { fd: 5, link: 'socket:[99]' },
          { fd: 6, link: 'anon_inode:[eventfd]' },
          { fd: 7, link: '/memfd:jit (deleted)', mntId: 15 }, // the kernel's internal shmem mount: criu's own case
          { fd: 8, link: '/data/db', mntId: 90 }, // a volume bound in: a mount of the container
        ]),
        { pid: 4107, comm: 'sleep', mountIds: inContainer, fds: [{ fd: 1, link: '/var/log/box/out.log', mntId: 22 }] },
      ],
      hostMounts,
    );
    expect(found).toEqual([
      { pid: 4100, comm: 'sh', fd: 1, path: '/var/log/box/out.log', mount: hostMounts[0], alsoHeldBy: [{ pid: 4100, fd: 2 }, { pid: 4107, fd: 1 }] },
    ]);
    expect(describeHostFile(found[0]!)).toBe(
      "process 4100 (sh) fd 1 is /var/log/box/out.log (also fd 2, fd 1 of 4107) on the host's mount 22 (ext4 on /), which the container does not see, " +
        'so criu cannot look it up: start the container with its stdio as a pipe or a terminal of its own, not a host file',
    );
  });

  it("the host's terminal and /dev/zero given as stdio are problems too (criu fails on them alike), each file once", () => {
    const found = findHostFiles(
      [init([{ fd: 0, link: '/dev/zero', mntId: 24 }, { fd: 1, link: '/dev/pts/0', mntId: 26 }, { fd: 2, link: '/dev/pts/0', mntId: 26 }])],
      hostMounts,
    );
    expect(found.map((h) => [h.fd, h.path, h.mount.mountPoint, h.alsoHeldBy])).toEqual([
      [0, '/dev/zero', '/dev', []],
      [1, '/dev/pts/0', '/dev/pts', [{ pid: 4100, fd: 2 }]],
    ]);
  });

  it('another fd on a host file is named with its own way out; a descendant is checked against its own mount namespace', () => {
    const found = findHostFiles(
      [
        init([{ fd: 9, link: '/srv/cache/index', mntId: 22 }]),
        // A process of the tree in a mount namespace of its own that does show mount 22.
        { pid: 4120, comm: 'worker', mountIds: new Set([...inContainer, 22]), fds: [{ fd: 4, link: '/srv/cache/other', mntId: 22 }] },
      ],
      hostMounts,
    );
    expect(found).toHaveLength(1);
    expect(describeHostFile(found[0]!)).toMatch(/^process 4100 \(sh\) fd 9 is \/srv\/cache\/index on the host's mount 22 .*: bind the file's directory into the container, or let the process open it from inside$/);
  });

  it('nothing when every path is on a mount of the container, or on one the host does not show either, or without mnt_id', () => {
    expect(
      findHostFiles(
        [init([{ fd: 0, link: '/dev/null', mntId: 69 }, { fd: 1, link: '/x', mntId: 4242 }, { fd: 2, link: '/y' }, { fd: 3, link: 'pipe:[1]' }])],
        hostMounts,
      ),
    ).toEqual([]);
  });
});
