// Where a tar stream ends, found independently of the parser: the parser stops at the end-of-archive blocks and
// never looks past them, so an entry hidden after the end (in a second zstd frame, say) passed verify unseen.
// Everything after the end must be zero padding; anything else is refused.

const BLOCK = 512
const MAX_PAX_BYTES = 1 << 20

function parseSize(header: Buffer): number {
  const field = header.subarray(124, 136)
  if ((field[0]! & 0x80) !== 0) {
    // GNU base-256: big-endian, the top bit of the first byte set.
    let n = 0
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!
    return n
  }
  const text = field.toString('latin1').replace(/[\0 ]+$/g, '').trim()
  return text ? parseInt(text, 8) : 0
}

/** A pax extended header's `size=` record, if it has one. */
function paxSize(body: Buffer): number | undefined {
  const m = /(?:^|\n)\d+ size=(\d+)\n/.exec(body.toString('utf8'))
  return m ? Number(m[1]) : undefined
}

export class TarEndGuard {
  private pending = Buffer.alloc(0)
  /** Bytes of entry data still to skip, and whether they are a pax header body to read. */
  private skip = 0
  private paxBody: Buffer[] | undefined
  private paxLeft = 0
  private nextSize: number | undefined
  private zeros = 0
  private ended = false
  private offset = 0
  problem: string | undefined

  feed(chunk: Buffer): void {
    if (this.problem) return
    let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk
    let at = 0
    while (!this.problem) {
      if (this.ended) {
        for (let i = at; i < buf.length; i++)
          if (buf[i] !== 0) {
            this.problem = `data after the end of the tar archive (at byte ${this.offset + i - at}): something is hidden past the last entry`
            return
          }
        this.offset += buf.length - at
        at = buf.length
        break
      }
      if (this.skip > 0) {
        const n = Math.min(this.skip, buf.length - at)
        if (this.paxBody) {
          this.paxBody.push(buf.subarray(at, at + Math.min(n, this.paxLeft)))
          this.paxLeft -= Math.min(n, this.paxLeft)
        }
        this.skip -= n
        at += n
        this.offset += n
        if (this.skip > 0) break
        if (this.paxBody) {
          this.nextSize = paxSize(Buffer.concat(this.paxBody))
          this.paxBody = undefined
        }
        continue
      }
      if (buf.length - at < BLOCK) break
      const header = buf.subarray(at, at + BLOCK)
      at += BLOCK
      this.offset += BLOCK
      if (header.every((b) => b === 0)) {
        if (++this.zeros === 2) this.ended = true
        continue
      }
      this.zeros = 0
      const type = String.fromCharCode(header[156]!)
      const size = this.nextSize ?? parseSize(header)
      this.nextSize = undefined
      this.skip = Math.ceil(size / BLOCK) * BLOCK
      if (type === 'x') {
        this.paxBody = []
        // What is kept of it: the parser refuses a pax header over 1 MiB, and one that size must not be held whole.
        this.paxLeft = Math.min(size, MAX_PAX_BYTES)
      }
    }
    this.pending = Buffer.from(buf.subarray(at))
    buf = Buffer.alloc(0)
  }
}
