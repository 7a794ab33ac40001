// CRIU's image format as snap reads it: each message and field by the name CRIU's images/*.proto gives it, with its
// number and type there. Every reader in this directory takes its field numbers from here, and the test helpers'
// image writer encodes from here; a unit test holds each definition to the .proto files CRIU's python package embeds.
// Only the fields snap reads or its tests write are listed: protobuf skips the others.

/** A field's protobuf type: a scalar, `message:NAME` or `enum:NAME` (CRIU's name of the type). */
export type ProtoType = 'uint32' | 'uint64' | 'int32' | 'sint32' | 'sint64' | 'bool' | 'string' | 'bytes' | `message:${string}` | `enum:${string}`
/** [number, type], and 'repeated' for a repeated field. */
export type FieldDef = readonly [number: number, type: ProtoType, label?: 'repeated']

const u32 = (n: number) => [n, 'uint32'] as const
const u64 = (n: number) => [n, 'uint64'] as const
const u32s = (n: number) => [n, 'uint32', 'repeated'] as const
const u64s = (n: number) => [n, 'uint64', 'repeated'] as const

export const CRIU_MESSAGES = {
  // pstree.proto
  pstree_entry: { pid: u32(1), ppid: u32(2), pgid: u32(3), sid: u32(4), threads: u32s(5) },

  // core.proto
  core_entry: { mtype: [1, 'enum:core_entry.march'], thread_info: [2, 'message:thread_info_x86'], tc: [3, 'message:task_core_entry'], thread_core: [5, 'message:thread_core_entry'] },
  task_core_entry: { task_state: u32(1), blk_sigset: u64(5), comm: [6, 'string'], old_seccomp_mode: [11, 'enum:seccomp_mode'] },
  thread_core_entry: { blk_sigset: u64(6), creds: [10, 'message:creds_entry'], seccomp_mode: [11, 'enum:seccomp_mode'], comm: [13, 'string'] },

  // creds.proto
  creds_entry: {
    uid: u32(1), gid: u32(2), euid: u32(3), egid: u32(4), suid: u32(5), sgid: u32(6), fsuid: u32(7), fsgid: u32(8),
    cap_inh: u32s(9), cap_prm: u32s(10), cap_eff: u32s(11), cap_bnd: u32s(12), secbits: u32(13), groups: u32s(14), no_new_privs: u32(18), cap_amb: u32s(19),
  },

  // core-x86.proto: user_x86_regs_entry numbers its registers in user_regs_struct's order.
  thread_info_x86: { gpregs: [2, 'message:user_x86_regs_entry'], fpregs: [3, 'message:user_x86_fpregs_entry'] },
  user_x86_regs_entry: {
    r15: u64(1), r14: u64(2), r13: u64(3), r12: u64(4), bp: u64(5), bx: u64(6), r11: u64(7), r10: u64(8), r9: u64(9), r8: u64(10),
    ax: u64(11), cx: u64(12), dx: u64(13), si: u64(14), di: u64(15), orig_ax: u64(16), ip: u64(17), cs: u64(18), flags: u64(19),
    sp: u64(20), ss: u64(21), fs_base: u64(22), gs_base: u64(23), ds: u64(24), es: u64(25), fs: u64(26), gs: u64(27),
    mode: [28, 'enum:user_x86_regs_mode'],
  },
  user_x86_fpregs_entry: {
    cwd: u32(1), swd: u32(2), twd: u32(3), fop: u32(4), rip: u64(5), rdp: u64(6), mxcsr: u32(7), mxcsr_mask: u32(8),
    st_space: u32s(9), xmm_space: u32s(10), xsave: [13, 'message:user_x86_xsave_entry'],
  },
  user_x86_xsave_entry: {
    xstate_bv: u64(1), ymmh_space: u32s(2), bndreg_state: u64s(3), bndcsr_state: u64s(4), opmask_reg: u64s(5), zmm_upper: u64s(6),
    hi16_zmm: u64s(7), pkru: u32s(8),
  },

  // mm.proto, vma.proto
  mm_entry: { mm_arg_start: u64(8), mm_arg_end: u64(9), exe_file_id: u32(12), mm_saved_auxv: u64s(13), vmas: [14, 'message:vma_entry', 'repeated'] },
  vma_entry: { start: u64(1), end: u64(2), pgoff: u64(3), shmid: u64(4), prot: u32(5), flags: u32(6), status: u32(7), fd: [8, 'sint64'], madv: u64(9) },

  // pagemap.proto: a pagemap image is one pagemap_head, then pagemap_entry after pagemap_entry.
  pagemap_head: { pages_id: u32(1) },
  pagemap_entry: { vaddr: u64(1), compat_nr_pages: u32(2), in_parent: [3, 'bool'], flags: u32(4), nr_pages: u64(5) },

  // fdinfo.proto, regfile.proto, memfd.proto
  file_entry: { type: [1, 'enum:fd_types'], id: u32(2), reg: [3, 'message:reg_file_entry'], usk: [16, 'message:unix_sk_entry'], memfd: [20, 'message:memfd_file_entry'] },
  // sk-unix.proto: uflags carries criu's USK_EXTERN (1) on the entry of a peer outside the tree.
  unix_sk_entry: { ino: u32(2), uflags: u32(6), name: [11, 'bytes'] },
  reg_file_entry: { id: u32(1), flags: u32(2), pos: u64(3), name: [6, 'string'], size: u64(8) },
  memfd_file_entry: { id: u32(1), flags: u32(2), pos: u64(3), inode_id: u32(5) },
  memfd_inode_entry: { name: [1, 'string'], uid: u32(2), gid: u32(3), size: u64(4), shmid: u32(5), seals: u32(6), inode_id: u64(7) },

  // remap-file-path.proto, ghost-file.proto
  remap_file_path_entry: { orig_id: u32(1), remap_id: u32(2), remap_type: [3, 'enum:remap_type'] },
  ghost_file_entry: { chunks: [9, 'bool'], size: u64(10) },
  ghost_chunk_entry: { len: u64(1), off: u64(2) },
} as const satisfies Record<string, Record<string, FieldDef>>

/** The enum values snap compares against (or its tests write), by CRIU's names. */
export const CRIU_ENUMS = {
  'core_entry.march': { X86_64: 1 },
  user_x86_regs_mode: { NATIVE: 1 },
  fd_types: { REG: 1, INETSK: 4, UNIXSK: 5, MEMFD: 18 },
  remap_type: { GHOST: 1 },
} as const satisfies Record<string, Record<string, number>>

export type MessageName = keyof typeof CRIU_MESSAGES
type Numbers<M extends MessageName> = { readonly [F in keyof (typeof CRIU_MESSAGES)[M]]: (typeof CRIU_MESSAGES)[M][F] extends FieldDef ? (typeof CRIU_MESSAGES)[M][F][0] : never }

function numbers<M extends MessageName>(name: M): Numbers<M> {
  return Object.fromEntries(Object.entries(CRIU_MESSAGES[name]).map(([field, def]) => [field, (def as FieldDef)[0]])) as Numbers<M>
}

// The field numbers as the readers use them: PSTREE_ENTRY.threads is pstree_entry's `threads`.
export const PSTREE_ENTRY = numbers('pstree_entry')
export const CORE_ENTRY = numbers('core_entry')
export const TASK_CORE_ENTRY = numbers('task_core_entry')
export const THREAD_CORE_ENTRY = numbers('thread_core_entry')
export const CREDS_ENTRY = numbers('creds_entry')
export const THREAD_INFO_X86 = numbers('thread_info_x86')
export const USER_X86_REGS_ENTRY = numbers('user_x86_regs_entry')
export const USER_X86_FPREGS_ENTRY = numbers('user_x86_fpregs_entry')
export const USER_X86_XSAVE_ENTRY = numbers('user_x86_xsave_entry')
export const MM_ENTRY = numbers('mm_entry')
export const VMA_ENTRY = numbers('vma_entry')
export const PAGEMAP_HEAD = numbers('pagemap_head')
export const PAGEMAP_ENTRY = numbers('pagemap_entry')
export const FILE_ENTRY = numbers('file_entry')
export const REG_FILE_ENTRY = numbers('reg_file_entry')
export const MEMFD_FILE_ENTRY = numbers('memfd_file_entry')
export const UNIX_SK_ENTRY = numbers('unix_sk_entry')
export const MEMFD_INODE_ENTRY = numbers('memfd_inode_entry')
export const REMAP_FILE_PATH_ENTRY = numbers('remap_file_path_entry')
export const GHOST_FILE_ENTRY = numbers('ghost_file_entry')
export const GHOST_CHUNK_ENTRY = numbers('ghost_chunk_entry')
