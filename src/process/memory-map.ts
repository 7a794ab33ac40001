// Where a process's memory is, by mapping, as /proc/PID/smaps tells it before the freeze: what `snap inspect` shows
// under "memory". Mappings of one file (its text, data and relro) are added up under the file's name; anonymous
// ones under [heap], [stack] or [anon].

import { readProcText } from './proc.js'

export interface MappingUse {
  mapping: string
  sizeKiB: number
  rssKiB: number
}

/** The mappings with the most resident memory, largest first; the rest summed up as "(N more)". */
export function parseSmaps(text: string, keep = 12): MappingUse[] {
  const byName = new Map<string, MappingUse>()
  let current: MappingUse | undefined
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \d+\s*(.*)$/.exec(line)
    if (head) {
      const name = head[3]!.trim() || '[anon]'
      current = byName.get(name) ?? { mapping: name, sizeKiB: 0, rssKiB: 0 }
      byName.set(name, current)
      current.sizeKiB += (parseInt(head[2]!, 16) - parseInt(head[1]!, 16)) / 1024
      continue
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line)
    if (rss && current) current.rssKiB += Number(rss[1])
  }
  const all = [...byName.values()].sort((a, b) => b.rssKiB - a.rssKiB || b.sizeKiB - a.sizeKiB)
  if (all.length <= keep) return all
  const rest = all.slice(keep)
  return [
    ...all.slice(0, keep),
    { mapping: `(${rest.length} more)`, sizeKiB: rest.reduce((n, m) => n + m.sizeKiB, 0), rssKiB: rest.reduce((n, m) => n + m.rssKiB, 0) },
  ]
}

/** Undefined when the process is gone; ProcUnreadableError when its smaps cannot be read. */
export function readMemoryMap(pid: number): MappingUse[] | undefined {
  const text = readProcText(`/proc/${pid}/smaps`)
  return text === undefined ? undefined : parseSmaps(text)
}
