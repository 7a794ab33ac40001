// Which of a container's mounts criu must be told are external, and where each is on the host: decided from
// mountinfo text alone (lines as a runc container on cgroup v1 shows them).
import { describe, expect, it } from 'vitest';
import { parseMountInfo, planContainer } from '../../src/process/container.js';

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
