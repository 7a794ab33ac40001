// Reads a failed criu dump or restore log and says why it failed, in words a person on call can act on.
// The patterns follow criu 4.2's own messages (criu/sk-inet.c, net.c, cr-dump.c, ...); each names where it comes from.

export interface CriuDiagnosis {
  /** The first meaningful error line, cleaned of criu's "(00.123456) Error (criu/x.c:123): " prefix noise but keeping the text. */
  cause: string
  /** For a known cause: what to do, naming the snap flag or fix (one sentence, no trailing period needed). */
  hint?: string
  /** A short machine-usable name for a known cause, e.g. 'tcp-established'. */
  known?: string
  /** Up to 4 error lines worth showing after the cause, in log order. */
  lines: string[]
}

const NO_ERROR_LINE = 'criu gave no error line'

const MAX_LINES = 4

interface LogLine {
  /** 'error' and 'warn' are criu's pr_err/pr_perror and pr_warn; 'other' is info, debug, pr_msg and child program output. */
  level: 'error' | 'warn' | 'other'
  text: string
}

interface KnownCause {
  known: string
  /** Whether this line names the cause. */
  matches: (line: LogLine) => boolean
  hint: (text: string, log: LogContext) => string
  /**
   * Evidence that also shows up in runs that fail for another reason (a warning about a thread that exited on its
   * own), so it counts only when the log has no other known cause and no error line of its own.
   */
  weak?: boolean
}

interface LogContext {
  /** criu's version as its log states it ("Version: 4.1.1 (gitid ...)"), when the log has it. */
  criuVersion?: string
}

const isError = (line: LogLine): boolean => line.level === 'error'

function errorMatching(...patterns: RegExp[]): (line: LogLine) => boolean {
  return (line) => isError(line) && patterns.some((p) => p.test(line.text))
}

function anyMatching(...patterns: RegExp[]): (line: LogLine) => boolean {
  return (line) => patterns.some((p) => p.test(line.text))
}

const CORE_ONLY = '`snap dump --core-only` takes the cores without a checkpoint'

// Order matters only when one line matches two entries: the more specific one comes first.
const KNOWN_CAUSES: KnownCause[] = [
  {
    // criu/sk-inet.c: pr_err("Connected TCP socket, consider using --%s option.\n", SK_EST_PARAM) at dump,
    // pr_err("Connected TCP socket in image\n") at restore.
    known: 'tcp-established',
    matches: anyMatching(/Connected TCP socket/, /consider using --tcp-established/i),
    hint: (text) =>
      /in image/.test(text)
        ? 'the bundle holds an established TCP connection, which criu restores only with --tcp-established: restore with the criu options the dump recorded (snap repeats them from the manifest)'
        : 'snap passes --tcp-established itself when it sees an established connection in /proc, so this one opened after snap looked: run the dump again, or pass `--criu-opt --tcp-established`',
  },
  {
    // criu/sk-inet.c: "In-flight connection (l) for %x", then "In-flight connections can be ignored with the --skip-in-flight option."
    known: 'in-flight',
    matches: errorMatching(/In-flight connection \(l\)/, /--skip-in-flight/),
    hint: () => 'a listening socket has connections the kernel accepted but the process has not: pass `--criu-opt --skip-in-flight` (those clients reconnect)',
  },
  {
    // Go 1.24 listens with MPTCP by default. criu/sk-inet.c: "Unsupported proto %d for socket %x" (262 is IPPROTO_MPTCP),
    // then "For Go programs, consider using \"GODEBUG=multipathtcp=0\" to disable MPTCP".
    known: 'mptcp',
    matches: anyMatching(/Unsupported proto 262 for socket/, /GODEBUG=multipathtcp=0/),
    hint: () => `criu cannot checkpoint MPTCP sockets: start the program with GODEBUG=multipathtcp=0 (Go) or without MPTCP; meanwhile ${CORE_ONLY}`,
  },
  {
    // The network lock runs iptables: criu/netfilter.c runs `sh -c "iptables -w -t filter -I INPUT ..."` per connection
    // ("Iptables configuration failed"), criu/net.c pipes rules into iptables-restore ("Locking network failed: iptables-restore
    // returned %d. ..."), criu/util.c reports a missing binary as `execvp("iptables-restore", ...) failed: ...`, and the
    // shell's own "sh: 1: iptables: not found" lands in the log as well.
    known: 'iptables-missing',
    matches: (line) =>
      /execvp\("ip6?tables(-restore)?"/.test(line.text) ||
      /\bip6?tables(-restore)?: (not found|command not found)/.test(line.text) ||
      /^ip6?tables(-restore)?( v[\d.]+( \([\w-]+\))?)?: /.test(line.text) ||
      (isError(line) &&
        /Iptables configuration failed|Locking network failed|Failed to lock TCP connection|built without libnftables support|nft command error/.test(
          line.text,
        )),
    hint: () => `criu locks the network with iptables while it dumps TCP connections, and that failed: install iptables (\`npm run setup\` does), or ${CORE_ONLY}`,
  },
  {
    // criu/cr-dump.c dump_task_rlimits(): pr_perror("Can't get rlimit %d", res), e.g. "Can't get rlimit 0: Operation not permitted".
    known: 'rlimit-capability',
    matches: errorMatching(/Can't get rlimit/),
    hint: () => `criu needs CAP_SYS_RESOURCE to read the limits of a task of another uid (prlimit), which this host does not give; ${CORE_ONLY}`,
  },
  {
    // criu/proc_parse.c: pr_err("Unknown shit %o (%s)\n", ...) for a mapping of "anon_inode:[io_uring]"; an io_uring fd
    // comes out of criu/files-ext.c as "Can't dump file %d of that type [%o] (anon anon_inode:[io_uring])". criu 4.2 has no
    // io_uring support at all, so any mention is the cause.
    known: 'io-uring',
    matches: anyMatching(/io_uring/),
    hint: () => `criu cannot checkpoint io_uring, which this process uses; ${CORE_ONLY}`,
  },
  {
    // criu/cr-dump.c check_sysvipc_map_dump(): "Task %d with SysVIPC shmem map @%lx doesn't live in IPC ns";
    // criu/shmem.c: "Sysv shmem %lx with (tail) hole not supported".
    known: 'sysv-shm',
    matches: errorMatching(/SysVIPC shmem map .*doesn't live in IPC ns/, /Sysv shmem .* not supported/i),
    hint: () => `the process maps SysV shared memory of the host IPC namespace, which criu dumps only with a whole IPC namespace of its own; ${CORE_ONLY}`,
  },
  {
    // criu/sockets.c: pr_perror("Can't get %d:%d opt", level, name); on Linux >= 6.16 getsockopt(SO_PASSCRED = 16,
    // SO_PASSSEC = 34) fails on AF_INET sockets and criu before 4.2 gives up (criu issue #2705, fixed in 4.2).
    known: 'inet-socket-criu-too-old',
    matches: errorMatching(/Can't get 1:(16|34)\b.*opt: Operation not supported/),
    hint: (_text, log) =>
      `${log.criuVersion ? `criu ${log.criuVersion}` : 'criu before 4.2'} cannot dump AF_INET sockets on this kernel (criu issue #2705): install criu >= 4.2 (\`npm run setup\`)`,
  },
  {
    // criu/mount.c logs with the "mnt: " prefix (mount-v2.c "mnt-v2: "), e.g. "mnt: 12:./ doesn't have a proper root mount";
    // criu/files-reg.c: "Can't lookup mount=%d for fd=%d path=%s". Info lines carry "mnt: " on every run, so errors only.
    known: 'mount',
    matches: errorMatching(/^mnt(-v2)?: /, /Can't lookup mount/, /doesn't have a proper root mount/),
    hint: () =>
      `the process lives in a container whose mounts criu must be told about: checkpoint the container's init from the host through its runtime (podman/runc checkpoint, which describes the mounts to criu), or ${CORE_ONLY}`,
  },
  {
    // criu/sk-unix.c, dump: "External socket is used. Consider using --ext-unix-sk option."
    known: 'external-socket',
    matches: errorMatching(/External socket is used/),
    hint: () =>
      'a socket of the process is connected to one outside the dumped tree: when this is a worker of a service, dump the root process of the tree (its master) instead, since the worker shares its sockets with the parent; for a unix datagram socket (e.g. to /dev/log) pass `--criu-opt --ext-unix-sk`',
  },
  {
    // criu/sk-unix.c: with --ext-unix-sk, "Can't dump half of stream unix connection. name: %s; peer name: %s"
    // (the option covers datagram peers only); at restore "External socket found in image. Consider using the
    // --ext-unix-sk option to allow restoring it."
    known: 'external-unix-socket',
    matches: errorMatching(/Can't dump half of stream unix connection/, /External socket found in image/),
    hint: (text) =>
      /found in image/.test(text)
        ? 'the bundle has a unix socket connected outside the tree, which criu restores only with `--ext-unix-sk`: restore with the criu options the dump recorded (snap repeats them from the manifest)'
        : '--ext-unix-sk covers only datagram unix sockets, and this stream socket is connected outside the dumped tree: dump the root process of the tree (its master) instead',
  },
  {
    // criu/pstree.c: "The root process %d is not a session leader. Consider using --shell-job option";
    // criu/tty.c: "Found dangling tty with sid %d pgid %d (%s) on peer fd %d." then
    // pr_msg "Task attached to shell terminal. Consider using --shell-job option. ..."
    known: 'shell-job',
    matches: anyMatching(/is not a session leader/, /Consider using --shell-job/, /Found dangling tty/),
    hint: () => 'the process belongs to a session or terminal outside the dumped tree: pass `--criu-opt --shell-job`',
  },
  {
    // criu/cr-restore.c: pr_perror("Can't fork for %d", pid); clone3 with set_tid answers EEXIST when the pid is in use.
    known: 'pid-taken',
    matches: errorMatching(/Can't fork for \d+: File exists/),
    hint: (text) => {
      const pid = /Can't fork for (\d+)/.exec(text)?.[1]
      return `pid ${pid ?? '?'}, which the bundle needs, is taken by another process: end that process, or \`snap restore --new-pidns\``
    },
  },
  {
    // criu/files-reg.c: "File %s has bad size %lu (expect %lu)".
    known: 'file-size-changed',
    matches: errorMatching(/has bad size \d+ \(expect \d+\)/),
    hint: () =>
      'a file the process had open changed size since the dump, and criu restores only onto the same file: put the file back as it was, or look at the bundle\'s core instead of restoring',
  },
  {
    // criu/file-lock.c: "Some file locks are hold by dumping tasks! You can try --file-locks to dump them."
    known: 'file-locks',
    matches: errorMatching(/Some file locks are hold/, /--file-locks/),
    hint: () => 'the process holds file locks: pass `--criu-opt --file-locks`',
  },
  {
    // compel/src/lib/infect.c: "Unseizable non-zombie %d found, state %c, err %d/%d", "Task pid reused while suspending";
    // criu/seize.c: "zombie %d (comm %s) found while seizing". criu 4.2 never says "Unable to seize", older notes do.
    known: 'task-exited',
    matches: errorMatching(/Unseizable non-zombie/, /Task pid reused while suspending/, /found while seizing/, /Unable to seize/),
    hint: () => 'a task of the tree exited or changed while criu was seizing it: check the process still runs and dump again',
  },
  {
    // compel/src/lib/infect.c compel_interrupt_task(): pr_warn("Unable to interrupt task: %d (%s)\n", pid, strerror(errno)).
    // A thread that exits on its own during the seize gives the same warning, hence weak.
    known: 'task-exited',
    weak: true,
    matches: (line) => line.level === 'warn' && /Unable to interrupt task: \d+ \(No such process\)/.test(line.text),
    hint: () => 'a task of the tree exited while criu was seizing it: check the process still runs and dump again',
  },
  {
    // Same warning with EPERM: ptrace(PTRACE_SEIZE) refused, most often because a debugger is attached.
    known: 'seize-denied',
    weak: true,
    matches: (line) => line.level === 'warn' && /Unable to interrupt task: \d+ \(Operation not permitted\)/.test(line.text),
    hint: () => 'criu could not ptrace the task: another tracer (gdb, strace, a profiler) is attached to it; detach it and dump again',
  },
  {
    // criu/files-ext.c dump_unsupp_fd(): "Can't dump file %d of that type [%o] (%s %s)".
    known: 'unsupported-file',
    matches: errorMatching(/Can't dump file \d+ of that type/),
    hint: () => `criu cannot checkpoint a kind of file this process has open (named in the line); ${CORE_ONLY}`,
  },
]

// Lines that come with every run on this host or with every failure, and so never say why.
const NEVER_THE_CAUSE: RegExp[] = [
  /RLIMIT_NOFILE/,
  /^(Pre-?dumping|Dumping|Restoring|Lazy pages transfer) FAILED\.?$/,
  /\bfailed with -?\d+!?$/,
  /^(\d+ )?exited, status=\d+$/,
  /^\d+ killed by signal \d+/,
  /^Killing processes because of failure on restore/,
]

const LINE_SHAPE = /^(?:\(\s*[\d.]+\)\s*)?(?:\d+:\s+)?(?:(Error|Warn)\s+\([^)]*\):\s*)?(.*)$/

function parseLine(raw: string): LogLine {
  const m = LINE_SHAPE.exec(raw.trim())
  const level = m?.[1] === 'Error' ? 'error' : m?.[1] === 'Warn' ? 'warn' : 'other'
  return { level, text: (m?.[2] ?? raw).trim() }
}

function neverTheCause(line: LogLine): boolean {
  return NEVER_THE_CAUSE.some((p) => p.test(line.text))
}

function findKnown(lines: LogLine[], weak: boolean): { index: number; cause: KnownCause } | undefined {
  for (const [index, line] of lines.entries()) {
    if (neverTheCause(line)) continue
    const cause = KNOWN_CAUSES.find((c) => (c.weak ?? false) === weak && c.matches(line))
    if (cause) return { index, cause }
  }
  return undefined
}

export function diagnoseCriuLog(logText: string): CriuDiagnosis {
  const parsed = logText.split(/\r?\n/).map(parseLine)
  const log: LogContext = { criuVersion: parsed.map((l) => /^Version: (\d+\.\d+(?:\.\d+)?)/.exec(l.text)?.[1]).find((v) => v) }

  const meaningfulErrors = parsed
    .map((line, index) => ({ line, index }))
    .filter(({ line }) => isError(line) && line.text !== '' && !neverTheCause(line))

  const found = findKnown(parsed, false) ?? (meaningfulErrors.length === 0 ? findKnown(parsed, true) : undefined)
  const causeIndex = found?.index ?? meaningfulErrors[0]?.index
  if (causeIndex === undefined) return { cause: NO_ERROR_LINE, lines: [] }

  const cause = parsed[causeIndex]?.text ?? NO_ERROR_LINE
  const seen = new Set([cause])
  const lines: string[] = []
  for (const { line, index } of meaningfulErrors) {
    if (lines.length === MAX_LINES) break
    if (index === causeIndex || seen.has(line.text)) continue
    seen.add(line.text)
    lines.push(line.text)
  }

  if (!found) return { cause, lines }
  return { cause, known: found.cause.known, hint: found.cause.hint(cause, log), lines }
}
