// protobuf's wire format, as snap reads CRIU's images without crit: a message read as field number -> values, or
// walked field by field where its bytes lie. crit is a python start-up per image, which made the cores built after
// the release cost seconds. The field numbers every reader passes here are named in proto.ts.

import { ImageFormatError } from './errors.js'

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

// ------------------------------------------------------------------ walking a message where its bytes lie

// decodeMessage makes a Map, and a Buffer a field, for every message: for an mm image of minimal VMAs that was 100
// times the image (3.8 MiB took 400 MB), and files.img is the same. The large images are walked with these instead,
// keeping nothing a VMA or a file.

/** Each field of the message in buf[from, to): its number, its value when a varint (undefined otherwise), and the
 *  bounds of its bytes when length-delimited. */
export function scanFields(buf: Buffer, from: number, to: number, fn: (n: number, value: number | bigint | undefined, start: number, end: number) => void): void {
  let at = from
  while (at < to) {
    const [keyValue, afterKey] = readVarint(buf, at)
    const key = Number(keyValue)
    const wire = key & 7
    at = afterKey
    let value: number | bigint | undefined
    let start = at
    if (wire === 0) [value, at] = readVarint(buf, at)
    else if (wire === 2 || wire === 1 || wire === 5) {
      let len = wire === 1 ? 8 : 4
      if (wire === 2) {
        const [l, next] = readVarint(buf, at)
        len = Number(l)
        at = start = next
      }
      at += len
    } else throw new ImageFormatError(`unexpected wire type ${wire}`)
    if (at > to) throw new ImageFormatError('truncated field')
    fn(Math.floor(key / 8), value, start, at)
  }
}

/** A walked varint that must fit a JS number exactly. */
export const exact = (v: number | bigint | undefined, n: number): number | undefined => {
  if (typeof v === 'bigint') throw new ImageFormatError(`field ${n} holds ${v}, past 2^53`)
  return v
}

/** A field CRIU always writes (proto2 `required`), or the image is not one criu wrote. */
export const required = (value: number | undefined, what: string): number => {
  if (value === undefined) throw new ImageFormatError(`${what} is missing`)
  return value
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
