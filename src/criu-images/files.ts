// files.img (a file_entry per file of the tree, fdinfo.proto) and memfd.img (memfd_inode_entry): the regular files
// a mapping or the executable names, with the size criu saw at the freeze, and where a memfd's contents are. Each
// entry is walked where it lies and nothing else is kept: files.img lists every file of the tree.

import { FILES_MAGIC, forEachEntry, imageEntries, MEMFD_INODE_MAGIC, parsing } from './image-file.js'
import { CRIU_ENUMS, FILE_ENTRY, MEMFD_FILE_ENTRY, MEMFD_INODE_ENTRY, REG_FILE_ENTRY, UNIX_SK_ENTRY } from './proto.js'
import { decodeMessage, exact, scanFields, uintField } from './wire.js'

const FD_TYPES = CRIU_ENUMS.fd_types

export interface FilesImage {
  /** Regular files by their files.img id (the id a file VMA's shmid and mm's exe_file_id name), with the size criu
   *  saw at the freeze. */
  regular: Map<number, { path: string; size?: number }>
  /** memfd files: their files.img id -> the inode_id memfd.img describes. */
  memfdInodes: Map<number, number>
}

/** A file_entry's type, its id, and the bounds of its reg and memfd messages. */
function fileEntry(image: Buffer, from: number, to: number): { type?: number; id?: number; reg?: [number, number]; memfd?: [number, number] } {
  const out: { type?: number; id?: number; reg?: [number, number]; memfd?: [number, number] } = {}
  scanFields(image, from, to, (n, value, start, end) => {
    // An enum is an int32: a negative one is written as ten bytes of two's complement.
    if (n === FILE_ENTRY.type && value !== undefined) out.type = Number(BigInt.asIntN(32, BigInt(value)))
    else if (n === FILE_ENTRY.id) out.id = exact(value, n)
    else if (n === FILE_ENTRY.reg) out.reg = value === undefined ? [start, end] : undefined
    else if (n === FILE_ENTRY.memfd) out.memfd = value === undefined ? [start, end] : undefined
  })
  return out
}

/** A reg_file_entry's id, the bounds of its name, and its size when asked (a size past 2^53 is refused). */
function regFile(image: Buffer, [from, to]: [number, number], withSize: boolean): { id?: number; size?: number; name?: [number, number] } {
  const out: { id?: number; size?: number; name?: [number, number] } = {}
  scanFields(image, from, to, (n, value, start, end) => {
    if (n === REG_FILE_ENTRY.id) out.id = exact(value, n)
    else if (n === REG_FILE_ENTRY.name) out.name = value === undefined ? [start, end] : undefined
    else if (n === REG_FILE_ENTRY.size && withSize) out.size = exact(value, n)
  })
  return out
}

/** The regular files (only those of `wanted` ids, when given) and the memfds of files.img. */
export function filesFromImage(image: Buffer, wanted?: ReadonlySet<number>): FilesImage {
  return parsing('files.img', () => {
    const regular: FilesImage['regular'] = new Map()
    const memfdInodes = new Map<number, number>()
    forEachEntry(image, FILES_MAGIC, 'files.img', (from, to) => {
      const { type, id: entryId, reg, memfd } = fileEntry(image, from, to)
      if (type === FD_TYPES.REG && reg) {
        const { id: regId, size, name } = regFile(image, reg, true)
        const id = entryId ?? regId
        if (name && id !== undefined && (!wanted || wanted.has(id))) regular.set(id, { path: image.toString('utf8', name[0], name[1]), size })
      } else if (type === FD_TYPES.MEMFD && memfd) {
        let memfdId: number | undefined
        let inode: number | undefined
        scanFields(image, memfd[0], memfd[1], (n, value) => {
          if (n === MEMFD_FILE_ENTRY.id) memfdId = exact(value, n)
          else if (n === MEMFD_FILE_ENTRY.inode_id) inode = exact(value, n)
        })
        const id = entryId ?? memfdId
        if (id !== undefined && inode !== undefined && (!wanted || wanted.has(id))) memfdInodes.set(id, inode)
      }
    })
    return { regular, memfdInodes }
  })
}

/** The paths files.img gives the regular files of these ids (the last entry for each, as filesFromImage keeps), in
 *  one pass. */
export function regularFilePaths(image: Buffer, ids: ReadonlySet<number>): Map<number, string> {
  return parsing('files.img', () => {
    const paths = new Map<number, string>()
    forEachEntry(image, FILES_MAGIC, 'files.img', (from, to) => {
      const { type, id: entryId, reg } = fileEntry(image, from, to)
      if (type !== FD_TYPES.REG || !reg) return
      const { id: regId, name } = regFile(image, reg, false)
      const id = entryId ?? regId
      if (id !== undefined && ids.has(id) && name) paths.set(id, image.toString('utf8', name[0], name[1]))
    })
    return paths
  })
}

/**
 * For memfd files (CRIU 4 dumps MAP_SHARED|MAP_ANONYMOUS memory as one too), the shmem id whose
 * pagemap-shmem-ID.img holds the contents, by files.img id: files.img names an inode_id, memfd.img maps it to a shmid.
 */
export function memfdShmids(files: FilesImage, memfdImage: Buffer): Map<number, number> {
  const byInode = parsing('memfd.img', () => {
    const out = new Map<number, number>()
    for (const raw of imageEntries(memfdImage, MEMFD_INODE_MAGIC, 'memfd.img')) {
      const inode = decodeMessage(raw)
      const inodeId = uintField(inode, MEMFD_INODE_ENTRY.inode_id)
      const shmid = uintField(inode, MEMFD_INODE_ENTRY.shmid)
      if (inodeId !== undefined && shmid !== undefined) out.set(inodeId, shmid)
    }
    return out
  })
  const byFile = new Map<number, number>()
  for (const [fileId, inodeId] of files.memfdInodes) {
    const shmid = byInode.get(inodeId)
    if (shmid !== undefined) byFile.set(fileId, shmid)
  }
  return byFile
}

/** criu/sk-unix.c: the entry of a peer outside the dumped tree (a datagram socket such as /dev/log's), which criu
 *  connects the restored socket to again. */
const USK_EXTERN = 1

/** The paths of the unix sockets outside the tree that restored sockets are connected to again (--ext-unix-sk). */
export function externalUnixPeers(image: Buffer): string[] {
  return parsing('files.img', () => {
    const out = new Set<string>()
    forEachEntry(image, FILES_MAGIC, 'files.img', (from, to) => {
      let type: number | undefined
      let usk: [number, number] | undefined
      scanFields(image, from, to, (n, value, start, end) => {
        if (n === FILE_ENTRY.type && value !== undefined) type = Number(BigInt.asIntN(32, BigInt(value)))
        else if (n === FILE_ENTRY.usk && value === undefined) usk = [start, end]
      })
      if (type !== FD_TYPES.UNIXSK || !usk) return
      let uflags = 0
      let name: [number, number] | undefined
      scanFields(image, usk[0], usk[1], (n, value, start, end) => {
        if (n === UNIX_SK_ENTRY.uflags) uflags = exact(value, n) ?? 0
        else if (n === UNIX_SK_ENTRY.name && value === undefined) name = [start, end]
      })
      // An abstract name starts with a NUL byte: it is the network namespace's, not a path.
      // The kernel's sun_path length counts the terminating NUL when the program's did: it is not part of the path.
      if (uflags & USK_EXTERN && name && name[1] > name[0] && image[name[0]] !== 0) out.add(image.toString('utf8', name[0], name[1]).replace(/\0+$/, ''))
    })
    return [...out]
  })
}