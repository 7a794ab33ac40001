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
