// Every failure snap reports is one of these classes: a one-line message for people and a documented exit code.
// The README's exit-code table is generated from EXIT_CODES, so the two cannot drift.

export const EXIT_CODES = {
  usage: { code: 2, meaning: 'bad arguments: a pid that is not a number, conflicting flags' },
  targetNotFound: { code: 3, meaning: 'the target does not exist (or exited before anything was done): no process with that pid, or none by the name, pidfile, cgroup, unit or container given' },
  targetRefused: { code: 4, meaning: 'snap will not touch this target: pid 1, snap itself, a kernel thread, a zombie, already traced, a session criu cannot dump, or a tree criu cannot checkpoint (io_uring, SysV shm of the host, another uid without CAP_SYS_RESOURCE, a nested PID namespace, a worker instead of its master): nothing was sent; `--core-only` still takes the cores' },
  permission: { code: 5, meaning: 'not allowed to trace the target (uid, capabilities, ptrace_scope)' },
  toolMissing: { code: 6, meaning: 'criu, gdb or Node.js missing or too old, or `criu check` fails' },
  output: { code: 7, meaning: 'the output path is unusable: missing directory, not a directory, exists, no room, unsafe' },
  stepFailed: { code: 8, meaning: 'an external step (gdb, criu) failed; the target was put back' },
  targetChanged: { code: 9, meaning: 'the target exited or its pid was reused during the operation' },
  timeout: { code: 10, meaning: 'a step ran past its deadline; its processes were killed and the target put back' },
  bundleInvalid: { code: 11, meaning: 'the bundle is not a snap bundle, is damaged, tampered with, unsafe to extract, or (for restore) not signed by a trusted key' },
  restoreRefused: { code: 12, meaning: 'restore preflight refused: pid taken, file changed, host differs' },
  restoreFailed: { code: 13, meaning: 'criu restore failed; any partly restored task was killed' },
  locked: { code: 14, meaning: 'another snap (a dump or a restore) is already working on this target or a process of its tree' },
  rollbackIncomplete: { code: 15, meaning: 'a process of the tree could not be put back in its found state, or died while a tool held it (never reported as put back): act on the message now' },
  uploadFailed: { code: 16, meaning: 'a transfer to or from an S3-compatible store failed (after retries) or did not check out; a bundle being uploaded stays on disk, named in the message' },
  internal: { code: 70, meaning: 'a bug in snap (an unexpected error); the target was put back; run again with --debug and report it' },
  interruptedHup: { code: 129, meaning: 'snap got SIGHUP; it rolled back and stopped' },
  interruptedInt: { code: 130, meaning: 'snap got SIGINT (Ctrl+C); it rolled back and stopped' },
  interruptedTerm: { code: 143, meaning: 'snap got SIGTERM; it rolled back and stopped' },
} as const

export type ExitKind = keyof typeof EXIT_CODES

export class SnapError extends Error {
  readonly kind: ExitKind
  /** What the person should do next; printed after the message. */
  readonly hint?: string

  constructor(kind: ExitKind, message: string, hint?: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.kind = kind
    this.hint = hint
  }

  get exitCode(): number {
    return EXIT_CODES[this.kind].code
  }

  /** The one line shown to people. */
  oneLine(): string {
    return this.hint ? `${this.message}; ${this.hint}` : this.message
  }
}

export class UsageError extends SnapError {
  constructor(message: string, hint?: string) {
    super('usage', message, hint)
  }
}

export class TargetNotFoundError extends SnapError {
  constructor(pid: number) {
    super('targetNotFound', `no process with pid ${pid}`, 'check the pid with `ps -p PID`')
  }
}

/** A target named otherwise than by pid (--name, --pidfile, --cgroup, --unit, --container) that names no live process. */
export class NoSuchTargetError extends SnapError {
  constructor(message: string, hint?: string) {
    super('targetNotFound', message, hint)
  }
}

/** A name that matches more than one tree root: snap will not choose. The message lists each with its pid and command
 *  line; `matches` has their pids. */
export class AmbiguousTargetError extends UsageError {
  readonly matches: number[]
  constructor(message: string, matches: number[], hint?: string) {
    super(message, hint)
    this.matches = matches
  }
}

export class TargetRefusedError extends SnapError {
  constructor(message: string, hint?: string) {
    super('targetRefused', message, hint)
  }
}

/**
 * A /proc file of the tree could not be read for a reason other than the process being gone: hidepid, an LSM, a
 * mount over it. Read as "nothing", it would make a tree look as if it held no fds, sockets or children, and the
 * plan would refuse nothing; so the dump refuses instead, before any signal.
 */
export class ProcUnreadableError extends TargetRefusedError {
  readonly path: string
  /** The errno name: EACCES, EIO, ENOTDIR, EISDIR, ... */
  readonly code: string

  constructor(path: string, code: string, reason?: string) {
    super(
      `cannot read ${path}: ${code}${reason ? ` (${reason})` : ''}`,
      'snap refuses a tree it cannot see whole; check hidepid/LSM settings and mounts over /proc',
    )
    this.path = path
    this.code = code
  }
}

export class PermissionDeniedError extends SnapError {
  constructor(message: string, hint?: string) {
    super('permission', message, hint)
  }
}

export class ToolError extends SnapError {
  constructor(message: string, hint?: string) {
    super('toolMissing', message, hint)
  }
}

export class OutputPathError extends SnapError {
  constructor(message: string, hint?: string) {
    super('output', message, hint)
  }
}

export class StepFailedError extends SnapError {
  constructor(message: string, hint?: string, options?: { cause?: unknown }) {
    super('stepFailed', message, hint, options)
  }
}

export class TargetChangedError extends SnapError {
  constructor(message: string, hint?: string) {
    super('targetChanged', message, hint)
  }
}

export class StepTimeoutError extends SnapError {
  constructor(message: string, hint?: string) {
    super('timeout', message, hint)
  }
}

export class BundleInvalidError extends SnapError {
  /** Every file or entry that failed, so a caller can list them all. */
  readonly problems: string[]
  constructor(message: string, problems: string[] = [], hint?: string) {
    super('bundleInvalid', message, hint)
    this.problems = problems
  }
}

/**
 * The bundle is signed by a key in the trusted-keys directory that is not trusted: someone other than root could have
 * written it (or a directory above it), so trusting it would hand them root. Names the key; the hint is the fix.
 */
export class KeyNotTrustedError extends BundleInvalidError {
  readonly keyPath: string
  constructor(message: string, keyPath: string, hint: string) {
    super(message, [keyPath], hint)
    this.keyPath = keyPath
  }
}

/**
 * The bundle is encrypted and no identity given opens it (none given, or none of its recipients'). Names the
 * recipients, as far as the header says.
 */
export class BundleEncryptedError extends BundleInvalidError {}

/** An upload, download or listing of an S3-compatible store failed. A dump's bundle is kept; the hint names it. */
export class UploadFailedError extends SnapError {
  constructor(message: string, hint?: string) {
    super('uploadFailed', message, hint)
  }
}

export class RestoreRefusedError extends SnapError {
  constructor(message: string, hint?: string) {
    super('restoreRefused', message, hint)
  }
}

export class RestoreFailedError extends SnapError {
  constructor(message: string, hint?: string) {
    super('restoreFailed', message, hint)
  }
}

export class LockedError extends SnapError {
  constructor(message: string, hint?: string) {
    super('locked', message, hint)
  }
}

export class RollbackIncompleteError extends SnapError {
  constructor(message: string, hint?: string) {
    super('rollbackIncomplete', message, hint)
  }
}

export class InternalError extends SnapError {
  constructor(cause: Error) {
    super('internal', `unexpected error: ${cause.message}`, 'run again with --debug for the stack trace', { cause })
    this.stack = cause.stack
  }
}

const SIGNAL_KINDS = { SIGHUP: 'interruptedHup', SIGINT: 'interruptedInt', SIGTERM: 'interruptedTerm' } as const
export type InterruptSignal = keyof typeof SIGNAL_KINDS

export class InterruptedError extends SnapError {
  readonly signal: InterruptSignal
  constructor(signal: InterruptSignal, what: string) {
    super(SIGNAL_KINDS[signal], `interrupted by ${signal} during ${what}; rolled back`)
    this.signal = signal
  }
}

export function isSnapError(e: unknown): e is SnapError {
  return e instanceof SnapError
}
