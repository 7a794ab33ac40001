// The bundle manifest: what was captured, how, and the sha256 of every artifact. manifests/manifest-v5.schema.json
// (and v1 to v4 before it, still read) is its JSON Schema; the tests validate every manifest they produce against the
// schema of its version, so the two agree.

export const MANIFEST_FORMAT = 'procsnap-bundle'
/** v2: the tree (processes), a core per process, why each criu option, core-only bundles. v3: cores kept as recipes
 *  over the CRIU images (coreStored, coreSha256, artifact kind core-recipe). v4: every thread's credentials
 *  (threadCreds), how the target was named, the watch trigger. v5: the network lock kept for the restore
 *  (networkLockKept). v1 to v4 bundles still read. */
export const MANIFEST_SCHEMA_VERSION = 5
export const OLDEST_READ_SCHEMA_VERSION = 1
export const MANIFEST_ENTRY = 'manifest.json'
export const SIGNATURE_ENTRY = 'manifest.sig'

export type RunState = 'running' | 'stopped'
export type FinalState = 'running' | 'stopped' | 'killed'
export type StepStatus = 'ok' | 'failed' | 'skipped'
export type ArtifactKind = 'binary' | 'core' | 'core-recipe' | 'criu-image' | 'log' | 'stacks'
export type DumpMode = 'standard' | 'short-freeze' | 'core-only'

export interface ThreadRecord {
  tid: number
  state: string
}

export interface FileRecord {
  path: string
  size: number
  /** Recorded for the executable only: hashing every library would slow the freeze's neighbours for little. */
  sha256?: string
}

export interface TargetRecord {
  pid: number
  ppid: number
  pgid: number
  sid: number
  ttyNr: number
  comm: string
  exe: string
  exeSha256: string | null
  exeSize: number | null
  cmdline: string[]
  cwd: string | null
  uid: number
  gid: number
  startTime: number
  threads: number
  threadIds: number[]
  vmRssKiB: number | null
  cgroup: string
  namespaces: Record<string, string>
  envNames: string[]
  /** Present only when the dump was run with --include-env. */
  env?: Record<string, string>
  openFiles: FileRecord[]
  mappedFiles: FileRecord[]
  /** The pids of the dumped tree, root first (restore needs them free). */
  treePids: number[]
}

/** A thread's credentials as criu restores them: ids, groups, capability sets (16 hex digits, as /proc/PID/status
 *  prints them), securebits, no_new_privs and the seccomp mode (0 none, 1 strict, 2 filter). */
export interface ThreadCredsRecord {
  uid: number
  gid: number
  euid: number
  egid: number
  suid: number
  sgid: number
  fsuid: number
  fsgid: number
  groups: number[]
  capInh: string
  capPrm: string
  capEff: string
  capBnd: string
  capAmb: string
  secbits: number
  noNewPrivs: number
  seccompMode: number
}

/** One process of the dumped tree. */
export interface ProcessRecord {
  /** As criu's images name it: in the tree's own PID namespace (a container's init is 1). */
  pid: number
  /** The pid snap saw it under on the host, when that differs (a container). */
  hostPid?: number
  ppid: number
  pgid: number | null
  sid: number | null
  comm: string
  threads: number
  tids: number[]
  /** A zombie when dumped: it had exited and its parent had not reaped it; no threads (threads 0, tids empty).
   *  criu restores it as a zombie. */
  exited?: boolean
  /** The state it was found in, before any signal. */
  found: RunState
  /** The state it was left in, confirmed in /proc ('killed' with --leave killed). */
  left: RunState | 'killed' | 'gone' | 'unknown'
  /** Its core's name (core.PID), or null when it got none (--cores root). */
  core: string | null
  /** v3: whether that core is a bundle entry; false when it is kept as a recipe over the CRIU images (each page of
   *  memory stored once) and `snap core` rebuilds it. Absent (v1, v2): stored. */
  coreStored?: boolean
  /** v3: the core's sha256 at the dump, which a rebuilt core must have. */
  coreSha256?: string
  /** v3, read from /proc before the freeze: its sockets (inet: addresses as "127.0.0.1:8080"; unix: paths). */
  sockets?: { fd: number; proto: string; state: string; local: string; remote: string }[]
  /** v3, read from /proc before the freeze: its open files but sockets, pipes and anonymous inodes (at most 64). */
  files?: { fd: number; path: string }[]
  /** v3: its namespaces, as /proc/PID/ns names them ("net:[4026531840]"). */
  namespaces?: { pid?: string; ipc?: string; net?: string; mnt?: string; user?: string }
  /** v3: its memory by mapping (the largest by resident size first), from /proc/PID/smaps. */
  memory?: { mapping: string; sizeKiB: number; rssKiB: number }[]
  /** v4: every thread's credentials as the dump's images hold them (core-TID.img); null for a zombie, which has
   *  none. Restore refuses images that give any thread other credentials. */
  threadCreds?: { tid: number; creds: ThreadCredsRecord | null }[]
  /** The language runtime its core shows (libpython or a pythonX.Y executable, libjvm.so, Go's build info, node):
   *  which reader gives its threads' frames in their own language. Absent for a native program or one without a
   *  core. */
  runtime?: { name: 'python' | 'java' | 'go' | 'node'; version: string | null; file: string }
  /** Where the record comes from: criu's pstree.img (what was dumped) or /proc (core-only: what was stopped). */
  source: 'pstree.img' | 'proc'
}

/** How the target was named when not by pid alone (dump or watch with --name, --pidfile, --cgroup, --unit,
 *  --container), and how that name became the root's pid. */
export interface TargetNamingRecord {
  by: 'pid' | 'name' | 'pidfile' | 'cgroup' | 'unit' | 'container'
  /** The name as given: the pid, NAME or pattern, pidfile path, cgroup, unit or container id. */
  value: string
  /** How it was resolved ("comm", "cmdline pattern", "systemctl MainPID", "cgroup v1 name=systemd /system.slice/x.service",
   *  "runc state (root /run/runc)", ...). */
  via: string
  pid: number
}

/** The watch trigger that fired a capture taken by `snap watch`, with the values it saw. */
export interface WatchTriggerRecord {
  /** The trigger's kind: cpu, cpu-below, rss, threads, fds, cgroup-memory, probe, signal. */
  trigger: string
  /** The condition as given ("cpu above 80% for 2s"). */
  condition: string
  firedAt: string
  /** This capture's number in the watch (1 for the first). */
  capture: number
  /** The samples that crossed the threshold, oldest first (at most 64): a value (percent, bytes, a count; null for
   *  a sample that could not be read) and, for a probe, what it saw. */
  samples: { at: string; value: number | null; detail?: string }[]
}

export interface StepRecord {
  name: string
  status: StepStatus
  startedAt: string
  endedAt: string
  durationMs: number
  command?: string[]
  exitCode?: number | null
  note?: string
}

export interface ArtifactRecord {
  path: string
  kind: ArtifactKind
  size: number
  sha256: string
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT
  schemaVersion: number
  tool: { name: string; version: string }
  createdAt: string
  mode: DumpMode
  host: { hostname: string; kernelRelease: string; arch: string; bootId: string; machineIdSha256: string | null }
  custody: { uid: number; user: string; argv: string[]; cwd: string; startedAt: string }
  target: TargetRecord
  originalState: { state: RunState; threads: ThreadRecord[] }
  /** v2: every process of the tree, root first. */
  processes?: ProcessRecord[]
  /** v2: which processes got a core. */
  cores?: 'all' | 'root'
  /** v4, optional: how the target was named, when not by pid alone. */
  targetNaming?: TargetNamingRecord
  /** v4, optional: the trigger that made `snap watch` take this capture. */
  watch?: WatchTriggerRecord
  /** v5, optional: `dump --leave killed` ended the tree with its TCP connections locked in snap's table, so their peers
   *  wait for the restore instead of being reset; `snap restore` lifts it once the tree is back. */
  networkLockKept?: { method: 'snap'; table: string; connections: number }
  /** v2: the tree was a container's: where its root is on the host and the mounts bound in from the host. */
  container?: { rootfs: string; externalMounts: { key: string; hostPath: string; fstype: string }[] }
  normalization: {
    action: 'sigstop' | 'converted'
    conversionWindowUs: number | null
    settleMs: number
    note: string
  }
  steps: StepRecord[]
  /** Milliseconds from the first signal that stopped the target to its final state. */
  freezeWindowMs: number
  finalState: FinalState
  tools: {
    /** null in a core-only bundle (no checkpoint). reasons (v2): why each option was chosen. */
    criu: { path: string; version: string; options: string[]; reasons?: { option: string; reason: string }[] } | null
    gdb: { path: string; version: string }
  }
  artifacts: ArtifactRecord[]
  warnings: string[]
  signed: boolean
}
