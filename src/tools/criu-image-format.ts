// CRIU's image format, as far as snap reads it without crit: a magic (after the common one), then entries of a u32
// length and a protobuf message; a message read as field number -> values. images/magic.h and protobuf's wire format.

export class ImageFormatError extends Error {}

export const IMG_COMMON_MAGIC = 0x54564319
export const PSTREE_MAGIC = 0x50273030
export const CORE_MAGIC = 0x55053847
export const MM_MAGIC = 0x57492820
export const FILES_MAGIC = 0x56303138

export type Field = number | Buffer

export function readVarint(buf: Buffer, at: number): [value: number, next: number] {
  let value = 0
  let shift = 0
  for (let i = at; i < buf.length && i < at + 10; i++) {
    const b = buf[i]!
    value += (b & 0x7f) * 2 ** shift
    shift += 7
    if ((b & 0x80) === 0) return [value, i + 1]
  }
  throw new ImageFormatError('truncated varint')
}

/** A protobuf message as field number -> values (varints as numbers, length-delimited fields as bytes). */
export function decodeMessage(msg: Buffer): Map<number, Field[]> {
  const fields = new Map<number, Field[]>()
  const put = (n: number, v: Field) => {
    const list = fields.get(n)
    if (list) list.push(v)
    else fields.set(n, [v])
  }
  let at = 0
  while (at < msg.length) {
    const [key, afterKey] = readVarint(msg, at)
    const n = Math.floor(key / 8)
    const wire = key & 7
    at = afterKey
    if (wire === 0) {
      const [v, next] = readVarint(msg, at)
      put(n, v)
      at = next
    } else if (wire === 2) {
      const [len, next] = readVarint(msg, at)
      if (next + len > msg.length) throw new ImageFormatError('truncated field')
      put(n, msg.subarray(next, next + len))
      at = next + len
    } else if (wire === 1) at += 8
    else if (wire === 5) at += 4
    else throw new ImageFormatError(`unexpected wire type ${wire}`)
  }
  return fields
}

/** The entries of an image: its magic, then u32 length + message, repeated. */
export function imageEntries(buf: Buffer, magic: number, name: string): Buffer[] {
  let at = 0
  if (buf.length >= 4 && buf.readUInt32LE(0) === IMG_COMMON_MAGIC) at = 4
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

/** Varints of a field, whether written one per tag or packed (protobuf-c writes proto2 repeated fields unpacked). */
export function repeatedVarints(values: Field[] | undefined): number[] {
  const out: number[] = []
  for (const v of values ?? []) {
    if (typeof v === 'number') out.push(v)
    else for (let p = 0; p < v.length; ) {
      const [n, next] = readVarint(v, p)
      out.push(n)
      p = next
    }
  }
  return out
}
