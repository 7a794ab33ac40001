// The images of one process a core is built from (pstree, mm, files, memfd), read side by side with nothing but the
// file system; its threads' core-TID.img and its pagemaps are read as the core is written.

import { join } from 'node:path'
import { filesFromImage, memfdShmids, type FilesImage } from '../criu-images/files.js'
import { readImageFile } from '../criu-images/image-file.js'
import { mmFromImage, VMA, type MmState } from '../criu-images/mm.js'
import { taskFromPstree, type TaskTree } from '../criu-images/pstree.js'

export function readProcessImages(imagesDir: string, pid: number): { task: TaskTree; mm: MmState; files: FilesImage; memfds: Map<number, number> } {
  const task = taskFromPstree(readImageFile(join(imagesDir, 'pstree.img'))!, pid)
  const mm = mmFromImage(readImageFile(join(imagesDir, `mm-${pid}.img`))!, pid)
  const filesRaw = readImageFile(join(imagesDir, 'files.img'), false)
  // Only the files the mappings name: files.img lists every file of the tree, each kept would cost a record.
  const mapped = new Set(mm.vmas.filter((v) => v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED | VMA.AREA_MEMFD)).map((v) => v.shmid))
  const files = filesRaw ? filesFromImage(filesRaw, mapped) : { regular: new Map(), memfdInodes: new Map() }
  const memfdRaw = readImageFile(join(imagesDir, 'memfd.img'), false)
  const memfds = memfdRaw ? memfdShmids(files, memfdRaw) : new Map<number, number>()
  return { task, mm, files, memfds }
}
