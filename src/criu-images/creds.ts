// A thread's credentials as criu gives them back, from its core-TID.img (core_entry.thread_core.creds, creds.proto):
// what restore compares, thread by thread, with what the dump recorded.

import type { ThreadCredsRecord } from '../bundle/manifest.js'
import { ImageFormatError, ImageLimitError } from './errors.js'
import { CORE_ENTRY, CREDS_ENTRY, TASK_CORE_ENTRY, THREAD_CORE_ENTRY } from './proto.js'
import { decodeMessage, messageField, textField, uintField, uintsField, type Fields } from './wire.js'

/** The most supplementary groups the kernel gives a task (NGROUPS_MAX). */
const MAX_GROUPS = 65536

/** The root's ids as criu gives them back: the first fields of a thread's credentials. */
export type ImageCreds = Pick<ThreadCredsRecord, 'uid' | 'gid' | 'euid' | 'egid' | 'suid' | 'sgid'>

/** Everything a thread's credentials give it, as criu restores them (each thread from its own core-TID.img). */
export type ThreadCreds = ThreadCredsRecord

/** The fields of ThreadCreds in the order a difference is reported. */
export const THREAD_CRED_FIELDS = [
  'uid', 'gid', 'euid', 'egid', 'suid', 'sgid', 'fsuid', 'fsgid', 'groups', 'capInh', 'capPrm', 'capEff', 'capBnd', 'capAmb', 'secbits', 'noNewPrivs', 'seccompMode',
] as const satisfies readonly (keyof ThreadCreds)[]

const EMPTY: Fields = new Map()

/** A required id of creds_entry, or the image is not one criu wrote. */
function need(creds: Fields, n: number): number {
  const v = uintField(creds, n)
  if (v === undefined) throw new ImageFormatError(`the core image's credentials lack field ${n}`)
  return v
}

/** core_entry.thread_core.creds' ids, and core_entry.tc.comm. */
export function credsFromCore(entry: Buffer): { creds: ImageCreds; comm: string | undefined } {
  const core = decodeMessage(entry)
  const creds = messageField(messageField(core, CORE_ENTRY.thread_core) ?? EMPTY, THREAD_CORE_ENTRY.creds)
  if (!creds) throw new ImageFormatError('the core image holds no credentials')
  const C = CREDS_ENTRY
  return {
    creds: { uid: need(creds, C.uid), gid: need(creds, C.gid), euid: need(creds, C.euid), egid: need(creds, C.egid), suid: need(creds, C.suid), sgid: need(creds, C.sgid) },
    comm: textField(messageField(core, CORE_ENTRY.tc) ?? EMPTY, TASK_CORE_ENTRY.comm),
  }
}

/** A capability set (u32 words, low first) as /proc/PID/status prints it. */
function capHex(words: number[]): string {
  let v = 0n
  words.forEach((w, i) => (v |= BigInt(w >>> 0) << BigInt(32 * i)))
  return v.toString(16).padStart(16, '0')
}

/**
 * A thread's full credentials from its core image: creds_entry in core_entry.thread_core.creds, and
 * thread_core.seccomp_mode (older criu wrote it in task_core's old_seccomp_mode for the whole task). null for a
 * zombie, whose core image has no thread_core.
 */
export function threadCredsFromCore(entry: Buffer): ThreadCreds | null {
  const core = decodeMessage(entry)
  const tc = messageField(core, CORE_ENTRY.thread_core)
  if (!tc) return null
  const creds = messageField(tc, THREAD_CORE_ENTRY.creds)
  if (!creds) throw new ImageFormatError('the core image holds no credentials')
  const C = CREDS_ENTRY
  const caps = (n: number) => capHex(uintsField(creds, n))
  const groups = creds.get(C.groups) ?? []
  // Packed or one a tag: a value is at least a byte either way.
  const groupBytes = groups.reduce<number>((n, g) => n + (Buffer.isBuffer(g) ? g.length : 1), 0)
  if (groupBytes > MAX_GROUPS * 5) throw new ImageLimitError(`the core image lists more than the ${MAX_GROUPS} groups the kernel gives a task`)
  return {
    uid: need(creds, C.uid), gid: need(creds, C.gid), euid: need(creds, C.euid), egid: need(creds, C.egid),
    suid: need(creds, C.suid), sgid: need(creds, C.sgid), fsuid: need(creds, C.fsuid), fsgid: need(creds, C.fsgid),
    groups: uintsField(creds, C.groups),
    capInh: caps(C.cap_inh), capPrm: caps(C.cap_prm), capEff: caps(C.cap_eff), capBnd: caps(C.cap_bnd), capAmb: caps(C.cap_amb),
    secbits: need(creds, C.secbits),
    noNewPrivs: uintField(creds, C.no_new_privs) ?? 0,
    seccompMode: uintField(tc, THREAD_CORE_ENTRY.seccomp_mode) ?? uintField(messageField(core, CORE_ENTRY.tc) ?? EMPTY, TASK_CORE_ENTRY.old_seccomp_mode) ?? 0,
  }
}
