// zstd decoding without the zstd program, for every frame of a bundle. A bundle is several zstd frames: the head
// (manifest), a skippable frame that fills the room reserved for it, then the frame(s) of everything else. Node's
// zstd stream decodes one frame and fails on what follows, so this splits the input at frame boundaries (RFC 8878:
// frame header, then blocks until the last, then an optional checksum), skips skippable frames, and hands each data
// frame to a decoder of its own, streaming: a frame of gigabytes is never held whole.

import { Transform, type TransformCallback } from 'node:stream'
import zlib from 'node:zlib'

const ZSTD_FRAME_MAGIC = 0xfd2fb528
/** Skippable frames have magics 0x184D2A50 to 0x184D2A5F. */
const isSkippable = (magic: number) => (magic & 0xfffffff0) === 0x184d2a50

/** Where the parser is: a frame's magic (and what follows it), inside one, or skipping. */
type State =
  | { at: 'magic' }
  | { at: 'skip'; left: number }
  | { at: 'skip-size' }
  | { at: 'frame-header' }
  | { at: 'block-header' }
  | { at: 'block'; left: number; last: boolean }
  | { at: 'checksum' }

export class ZstdFramesDecompressor extends Transform {
  private pending: Buffer = Buffer.alloc(0)
  private state: State = { at: 'magic' }
  private decoder: zlib.ZstdDecompress | undefined
  private decoderEnded: Promise<void> | undefined
  /** Rejects when the frame's decoder fails (a corrupt frame). */
  private decoderFailed: Promise<never> | undefined
  private checksum = false
  private frames = 0

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk
    this.drain().then(() => done(), done)
  }

  override _flush(done: TransformCallback): void {
    this.drain()
      .then(() => {
        if (this.state.at !== 'magic' || this.pending.length > 0) throw new Error('the zstd data ends inside a frame (truncated)')
        if (this.frames === 0) throw new Error('no zstd frame in the input')
        done()
      })
      .catch(done)
  }

  /** Parses as far as the bytes at hand allow. */
  private async drain(): Promise<void> {
    for (;;) {
      const s = this.state
      const b = this.pending
      if (s.at === 'magic') {
        if (b.length < 4) return
        const magic = b.readUInt32LE(0)
        if (isSkippable(magic)) this.state = { at: 'skip-size' }
        else if (magic === ZSTD_FRAME_MAGIC) this.state = { at: 'frame-header' }
        else throw new Error(`not a zstd frame (magic 0x${magic.toString(16)})`)
        if (this.state.at === 'skip-size') this.pending = b.subarray(4)
      } else if (s.at === 'skip-size') {
        if (b.length < 4) return
        this.state = { at: 'skip', left: b.readUInt32LE(0) }
        this.pending = b.subarray(4)
      } else if (s.at === 'skip') {
        const n = Math.min(s.left, b.length)
        this.pending = b.subarray(n)
        if (s.left - n > 0) return void (this.state = { at: 'skip', left: s.left - n })
        this.state = { at: 'magic' }
      } else if (s.at === 'frame-header') {
        if (b.length < 5) return
        const fhd = b[4]!
        const single = (fhd >> 5) & 1
        const fcsFlag = fhd >> 6
        const dictBytes = [0, 1, 2, 4][fhd & 3]!
        const fcsBytes = fcsFlag === 0 ? single : [0, 2, 4, 8][fcsFlag]!
        if ((fhd >> 3) & 1) throw new Error('a zstd frame header with its reserved bit set')
        const size = 4 + 1 + (single ? 0 : 1) + dictBytes + fcsBytes
        if (b.length < size) return
        this.checksum = ((fhd >> 2) & 1) === 1
        this.startFrame()
        await this.feed(b.subarray(0, size))
        this.pending = b.subarray(size)
        this.state = { at: 'block-header' }
      } else if (s.at === 'block-header' || s.at === 'block') {
        // The blocks at hand are walked to find where the frame ends, and given to its decoder in one piece: a
        // write per block (128 KiB) made the decoder answer in pieces that small, four times slower.
        let at: State = s
        let off = 0
        for (;;) {
          if (at.at === 'block-header') {
            if (b.length - off < 3) break
            const h = b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16)
            const type = (h >> 1) & 3
            if (type === 3) throw new Error('a zstd block of the reserved type')
            off += 3
            at = { at: 'block', left: type === 1 ? 1 : h >>> 3, last: (h & 1) === 1 }
          } else if (at.at === 'block') {
            const n = Math.min(at.left, b.length - off)
            off += n
            if (at.left > n) {
              at = { ...at, left: at.left - n }
              break
            }
            at = !at.last ? { at: 'block-header' } : this.checksum ? { at: 'checksum' } : { at: 'magic' }
          } else break
        }
        if (off > 0) await this.feed(b.subarray(0, off))
        this.pending = b.subarray(off)
        // The frame's last block ended without a checksum: so does the frame.
        if (at.at === 'magic') await this.endFrame()
        else this.state = at
        if (at.at === 'block' || (at.at === 'block-header' && this.pending.length < 3)) return
      } else {
        if (b.length < 4) return
        await this.feed(b.subarray(0, 4))
        this.pending = b.subarray(4)
        await this.endFrame()
      }
      if (this.pending.length === 0 && this.state.at === 'magic') return
    }
  }

  private startFrame(): void {
    // Its output 256 KiB at a time: at the default 16 KiB, the reader's per-chunk work made a 2 GiB bundle's decoding
    // 8 s instead of 1.7 s here (the decoding itself runs on libuv's threads); larger pieces were no faster.
    const decoder = zlib.createZstdDecompress({ chunkSize: 256 << 10 })
    decoder.on('data', (d: Buffer) => this.push(d))
    this.decoderFailed = new Promise<never>((_, reject) => decoder.once('error', reject))
    this.decoderFailed.catch(() => undefined)
    this.decoderEnded = Promise.race([new Promise<void>((resolve) => decoder.once('end', resolve)), this.decoderFailed])
    this.decoder = decoder
  }

  /** Bytes of the frame at hand to its decoder, waiting while it is behind (memory stays bounded). */
  private async feed(bytes: Buffer): Promise<void> {
    const decoder = this.decoder!
    // A copy: the input chunk's memory is not the decoder's to keep while it is behind.
    if (!decoder.write(Buffer.from(bytes))) await Promise.race([new Promise<void>((resolve) => decoder.once('drain', resolve)), this.decoderFailed!])
  }

  private async endFrame(): Promise<void> {
    this.decoder!.end()
    await this.decoderEnded
    this.decoder = undefined
    this.frames++
    this.state = { at: 'magic' }
  }
}
