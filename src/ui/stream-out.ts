// Results too large to build as one string, written as they are made: a batch of 64 KiB at a time. A stacks result
// of 30 MiB took 409 MB to print as one text and 940 MB as oclif's JSON (which tokenizes the whole text into an
// object a token); written this way it costs the result itself, each batch's strings freed once written.

import { reclaimEvery } from '../tools/reclaim.js'

const BATCH = 64 << 10

/** Collects lines and hands them on `BATCH` characters at a time, joined by newlines (each batch without the last). */
export class LineBatches {
  private lines: string[] = []
  private size = 0
  private written = 0
  private readonly reclaim = reclaimEvery(1 << 20)

  constructor(private readonly write: (batch: string) => void) {}

  line(text: string): void {
    this.lines.push(text)
    this.size += text.length + 1
    if (this.size >= BATCH) this.flush()
  }

  flush(): void {
    if (this.lines.length === 0) return
    this.write(this.lines.join('\n'))
    this.written += this.size
    this.lines = []
    this.size = 0
    this.reclaim(this.written)
  }
}

/**
 * `value` as JSON.stringify(value, null, 2) writes it, to the byte, handed to `write` in pieces of about `BATCH`
 * characters: never the whole text at once.
 */
export function writePrettyJson(value: unknown, write: (piece: string) => void): void {
  let buf = ''
  let written = 0
  const reclaim = reclaimEvery(1 << 20)
  const put = (s: string) => {
    buf += s
    if (buf.length >= BATCH) {
      write(buf)
      reclaim((written += buf.length))
      buf = ''
    }
  }
  const walk = (v: unknown, indent: string): void => {
    if (v !== null && typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') v = (v as { toJSON: () => unknown }).toJSON()
    if (v === null || typeof v !== 'object') {
      put(JSON.stringify(v) ?? 'null')
      return
    }
    const inner = indent + '  '
    if (Array.isArray(v)) {
      if (v.length === 0) return put('[]')
      put('[')
      v.forEach((item, i) => {
        put(`${i ? ',' : ''}\n${inner}`)
        walk(item === undefined || typeof item === 'function' || typeof item === 'symbol' ? null : item, inner)
      })
      return put(`\n${indent}]`)
    }
    const entries = Object.entries(v).filter(([, x]) => x !== undefined && typeof x !== 'function' && typeof x !== 'symbol')
    if (entries.length === 0) return put('{}')
    put('{')
    entries.forEach(([k, x], i) => {
      put(`${i ? ',' : ''}\n${inner}${JSON.stringify(k)}: `)
      walk(x, inner)
    })
    put(`\n${indent}}`)
  }
  walk(value, '')
  if (buf) write(buf)
}
