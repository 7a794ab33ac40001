// CRIU's image format, as snap reads it without crit: a magic (after the common one), then entries of a u32 length
// and a protobuf message; a message read as field number -> values. images/magic.h and protobuf's wire format.
// One reader for every image snap opens (pstree, core, mm, pagemap, files, memfd, remap-fpath, ghost files): crit is
// a python start-up per image, which made the cores built after the release cost seconds.

export class ImageFormatError extends Error {}

export const IMG_COMMON_MAGIC = 0x54564319
export const IMG_SERVICE_MAGIC = 0x55105940
export const PSTREE_MAGIC = 0x50273030
export const CORE_MAGIC = 0x55053847
export const MM_MAGIC = 0x57492820
export const FILES_MAGIC = 0x56303138
/** pagemap-PID.img and pagemap-shmem-ID.img alike. */
export const PAGEMAP_MAGIC = 0x56084025
export const MEMFD_INODE_MAGIC = 0x48453499

/** A varint as a number while it is exact as one, as a bigint past 2^53 (addresses, registers, masks); a fixed32 or
 *  fixed64 field, or a length-delimited one, as its bytes. */
export type Field = number | bigint | Buffer
export type Fields = Map<number, Field[]>

export function readVarint(buf: Buffer, at: number): [value: number | bigint, next: number] {
  let value = 0
  let shift = 0
  for (let i = at; i < buf.length && i < at + 10; i++) {
    const b = buf[i]!
    if (shift === 49) return readBigVarint(buf, at) // 8 bytes and more may pass 2^53
    value += (b & 0x7f) * 2 ** shift
    shift += 7
    if ((b & 0x80) === 0) return [value, i + 1]
  }
  throw new ImageFormatError('truncated varint')
}

function readBigVarint(buf: Buffer, at: number): [number | bigint, number] {
  let value = 0n
  for (let i = at, shift = 0n; i < buf.length && i < at + 10; i++, shift += 7n) {
    const b = buf[i]!
    value |= BigInt(b & 0x7f) << shift
    if ((b & 0x80) === 0) {
      value &= (1n << 64n) - 1n
      return [value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value, i + 1]
    }
  }
  throw new ImageFormatError('truncated varint')
}

/** A protobuf message as field number -> values, in the order written. */
export function decodeMessage(msg: Buffer): Fields {
  const fields: Fields = new Map()
  const put = (n: number, v: Field) => {
    const list = fields.get(n)
    if (list) list.push(v)
    else fields.set(n, [v])
  }
  let at = 0
  while (at < msg.length) {
    const [keyValue, afterKey] = readVarint(msg, at)
    const key = Number(keyValue)
    const n = Math.floor(key / 8)
    const wire = key & 7
    at = afterKey
    if (wire === 0) {
      const [v, next] = readVarint(msg, at)
      put(n, v)
      at = next
    } else if (wire === 2 || wire === 1 || wire === 5) {
      let len = wire === 1 ? 8 : 4
      if (wire === 2) {
        const [l, next] = readVarint(msg, at)
        len = Number(l)
        at = next
      }
      if (at + len > msg.length) throw new ImageFormatError('truncated field')
      put(n, msg.subarray(at, at + len))
      at += len
    } else throw new ImageFormatError(`unexpected wire type ${wire}`)
  }
  return fields
}

/** The entries of an image: its magic, then u32 length + message, repeated. */
export function imageEntries(buf: Buffer, magic: number, name: string): Buffer[] {
  let at = 0
  if (buf.length >= 4 && (buf.readUInt32LE(0) === IMG_COMMON_MAGIC || buf.readUInt32LE(0) === IMG_SERVICE_MAGIC)) at = 4
  if (buf.length < at + 4 || buf.readUInt32LE(at) !== magic) throw new ImageFormatError(`${name} does not start with its magic`)
  at += 4
  const out: Buffer[] = []
  while (at < buf.length) {
    if (at + 4 > buf.length) throw new ImageFormatError(`${name}: truncated entry size`)
    const len = buf.readUInt32LE(at)
    at += 4
    if (at + len > buf.length) throw new ImageFormatError(`${name}: truncated entry`)
    out.push(buf.subarray(at, at + len))
    at += len
  }
  return out
}

// ------------------------------------------------------------------ reading fields (the last value wins, as in protobuf)

/** A varint field that fits a JS number exactly; undefined when absent. */
export function uintField(f: Fields, n: number): number | undefined {
  const v = f.get(n)?.at(-1)
  if (typeof v === 'number') return v
  if (typeof v === 'bigint') throw new ImageFormatError(`field ${n} holds ${v}, past 2^53`)
  return undefined
}

/** A varint field as the uint64 it is; undefined when absent. */
export function u64Field(f: Fields, n: number): bigint | undefined {
  const v = f.get(n)?.at(-1)
  return typeof v === 'number' ? BigInt(v) : typeof v === 'bigint' ? v : undefined
}

/** An int32 or sint32 written as a varint: negative int32s are written as ten-byte two's complement. */
export function int32Field(f: Fields, n: number): number | undefined {
  const v = u64Field(f, n)
  return v === undefined ? undefined : Number(BigInt.asIntN(32, v))
}

export function messageField(f: Fields, n: number): Fields | undefined {
  const v = f.get(n)?.at(-1)
  return Buffer.isBuffer(v) ? decodeMessage(v) : undefined
}

/** Every value of a repeated message field. */
export function messagesField(f: Fields, n: number): Fields[] {
  return (f.get(n) ?? []).filter(Buffer.isBuffer).map(decodeMessage)
}

export function textField(f: Fields, n: number): string | undefined {
  const v = f.get(n)?.at(-1)
  return Buffer.isBuffer(v) ? v.toString('utf8') : undefined
}

/** A repeated varint field as uint64s, whether written one per tag or packed (protobuf-c writes proto2 repeated
 *  fields unpacked). */
export function u64sField(f: Fields, n: number): bigint[] {
  const out: bigint[] = []
  for (const v of f.get(n) ?? []) {
    if (typeof v === 'number') out.push(BigInt(v))
    else if (typeof v === 'bigint') out.push(v)
    else for (let p = 0; p < v.length; ) {
      const [x, next] = readVarint(v, p)
      out.push(BigInt(x))
      p = next
    }
  }
  return out
}

/** A repeated varint field whose values fit JS numbers (tids, u32 words). */
export function uintsField(f: Fields, n: number): number[] {
  return u64sField(f, n).map((v) => {
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ImageFormatError(`field ${n} holds ${v}, past 2^53`)
    return Number(v)
  })
}
