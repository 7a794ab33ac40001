// What a criu killed mid-dump can leave in a process's code. To run a system call inside the target, criu (compel)
// swaps a few bytes at the start of an executable mapping ("Parasite syscall_ip at ADDR" in its log) for a `syscall;
// int3` sequence and the name of its memfd, runs it, and swaps the original bytes back. Killed in between, it leaves
// them swapped: the process runs on, and dies of SIGTRAP the next time it executes that code (seen here: a python
// server, `trap int3 ip:41f004`, seconds after it was resumed, at its next request). The original bytes are in the
// file the mapping comes from: they are put back through /proc/PID/mem before the process is resumed.

import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs'

/** How many bytes from syscall_ip compel may have swapped: the syscall blob and the memfd name after it. */
const SWAPPED_BYTES = 64

/** Every "Parasite syscall_ip at 0x..." criu logged. */
export function parasiteSyscallIps(logText: string): number[] {
  return [...new Set([...logText.matchAll(/Parasite syscall_ip at 0x([0-9a-f]+)/g)].map((m) => parseInt(m[1]!, 16)))]
}

interface Mapping {
  start: number
  end: number
  perms: string
  offset: number
  path: string
}

function mappingOf(pid: number, address: number): Mapping | undefined {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/maps`, 'utf8')
  } catch {
    return undefined
  }
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+)\s+(\S+)\s+([0-9a-f]+)\s+\S+\s+\d+\s+(\/.*)$/.exec(line)
    if (!m) continue
    const start = parseInt(m[1]!, 16)
    const end = parseInt(m[2]!, 16)
    if (address >= start && address < end) return { start, end, perms: m[3]!, offset: parseInt(m[4]!, 16), path: m[5]! }
  }
  return undefined
}

/**
 * Puts back the original code where criu may have left its own, in each process, from the mapped file (read through
 * the process's own root, so a container's binary is the one compared). Returns what it repaired, "pid P at ADDR".
 */
export function restoreSwappedCode(pids: number[], logText: string): { repaired: string[]; problems: string[] } {
  const out = { repaired: [] as string[], problems: [] as string[] }
  const ips = parasiteSyscallIps(logText)
  for (const pid of pids) {
    for (const ip of ips) {
      const map = mappingOf(pid, ip)
      if (!map || !map.perms.includes('x') || map.path.endsWith(' (deleted)')) continue
      const length = Math.min(SWAPPED_BYTES, map.end - ip)
      const original = Buffer.alloc(length)
      const now = Buffer.alloc(length)
      let file: number | undefined
      let mem: number | undefined
      try {
        file = openSync(`/proc/${pid}/root${map.path}`, 'r')
        if (readSync(file, original, 0, length, map.offset + (ip - map.start)) !== length) continue
        mem = openSync(`/proc/${pid}/mem`, 'r+')
        if (readSync(mem, now, 0, length, ip) !== length || now.equals(original)) continue
        writeSync(mem, original, 0, length, ip)
        out.repaired.push(`pid ${pid} at 0x${ip.toString(16)} (${map.path})`)
      } catch (e) {
        out.problems.push(`pid ${pid} at 0x${ip.toString(16)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`)
      } finally {
        if (file !== undefined) closeSync(file)
        if (mem !== undefined) closeSync(mem)
      }
    }
  }
  return out
}
