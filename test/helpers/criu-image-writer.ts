// Writes CRIU images the way criu does (the common magic, the image's magic, then u32 length + protobuf message per
// entry), for unit tests of snap's image readers without a dump. Only what those tests need of protobuf: varints,
// packed or not, and length-delimited fields.

import { IMG_COMMON_MAGIC } from '../../src/tools/criu-image-format.js';

/** A field's value: a varint (number or bigint), a nested message or bytes (Buffer), a string, or repeated values. */
export type FieldValue = number | bigint | boolean | Buffer | string | FieldValue[];

function varint(value: bigint): Buffer {
  let v = BigInt.asUintN(64, value);
  const out: number[] = [];
  do {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v ? byte | 0x80 : byte);
  } while (v);
  return Buffer.from(out);
}

/** A protobuf message from [field number, value] pairs; an array value is written one tag per element (as
 *  protobuf-c writes proto2 repeated fields). */
export function message(fields: [number, FieldValue | undefined][]): Buffer {
  const parts: Buffer[] = [];
  const put = (n: number, v: FieldValue) => {
    if (Array.isArray(v)) return v.forEach((x) => put(n, x));
    if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') {
      parts.push(varint(BigInt(n) << 3n), varint(BigInt(v)));
    } else {
      const bytes = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
      parts.push(varint((BigInt(n) << 3n) | 2n), varint(BigInt(bytes.length)), bytes);
    }
  };
  for (const [n, v] of fields) if (v !== undefined) put(n, v);
  return Buffer.concat(parts);
}

/** Packed repeated varints: one length-delimited field. */
export function packed(values: (number | bigint)[]): Buffer {
  return Buffer.concat(values.map((v) => varint(BigInt(v))));
}

export function image(magic: number, entries: Buffer[]): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32LE(IMG_COMMON_MAGIC, 0);
  head.writeUInt32LE(magic, 4);
  return Buffer.concat([head, ...entries.flatMap((e) => {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(e.length, 0);
    return [len, e];
  })]);
}

function readVarintAt(buf: Buffer, at: number): [bigint, number] {
  let v = 0n;
  for (let i = at, shift = 0n; i < buf.length; i++, shift += 7n) {
    v |= BigInt(buf[i]! & 0x7f) << shift;
    if ((buf[i]! & 0x80) === 0) return [v, i + 1];
  }
  throw new Error('truncated varint');
}

/**
 * A message with the length-delimited field `n` replaced by `change(old)`, every other field kept byte for byte (so a
 * real image can be edited in one place without re-encoding what this writer does not know, fixed64s and all).
 */
export function replaceField(msg: Buffer, n: number, change: (old: Buffer) => Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  let found = false;
  while (at < msg.length) {
    const start = at;
    const [key, afterKey] = readVarintAt(msg, at);
    const wire = Number(key & 7n);
    at = afterKey;
    if (wire === 0) at = readVarintAt(msg, at)[1];
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) {
      const [len, next] = readVarintAt(msg, at);
      if (Number(key >> 3n) === n) {
        parts.push(message([[n, change(msg.subarray(next, next + Number(len)))]]));
        found = true;
        at = next + Number(len);
        continue;
      }
      at = next + Number(len);
    } else throw new Error(`wire type ${wire}`);
    parts.push(msg.subarray(start, at));
  }
  if (!found) throw new Error(`no field ${n} to replace`);
  return Buffer.concat(parts);
}

/** An image's entries (after its magics), for editing one and writing it back with image(). */
export function imageMessages(buf: Buffer): { magic: number; entries: Buffer[] } {
  let at = buf.readUInt32LE(0) === IMG_COMMON_MAGIC ? 4 : 0;
  const magic = buf.readUInt32LE(at);
  at += 4;
  const entries: Buffer[] = [];
  while (at < buf.length) {
    const len = buf.readUInt32LE(at);
    entries.push(buf.subarray(at + 4, at + 4 + len));
    at += 4 + len;
  }
  return { magic, entries };
}
