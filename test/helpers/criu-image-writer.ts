// Writes CRIU images the way criu does (the common magic, the image's magic, then u32 length + protobuf message per
// entry), for tests of snap's image readers without a dump. Messages are written from CRIU's names
// (src/criu-images/proto.ts, held to CRIU's .proto files by test/unit/criu-proto.test.ts): a field snap does not
// define cannot be written, and each is encoded as its CRIU type says.

import { IMG_COMMON_MAGIC } from '../../src/criu-images/image-file.js';
import { CRIU_ENUMS, CRIU_MESSAGES, type FieldDef, type MessageName } from '../../src/criu-images/proto.js';
import { readVarint } from '../../src/criu-images/wire.js';

/** A field's value: a varint (number, bigint or boolean), an enum's value by its CRIU name, a string, bytes or an
 *  encoded message (Buffer), a message as its fields (an object), or repeated values. */
export type FieldValue = number | bigint | boolean | Buffer | string | FieldValue[] | MessageValues;
export interface MessageValues {
  [field: string]: FieldValue | undefined;
}

/** The values a message of CRIU's `M` may be given, by its field names. */
export type Values<M extends MessageName> = { [F in keyof (typeof CRIU_MESSAGES)[M]]?: FieldValue };

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

const zigzag = (v: bigint): bigint => (v >= 0n ? v << 1n : (-v << 1n) - 1n);

function definition(name: MessageName, field: string): FieldDef {
  const def = (CRIU_MESSAGES[name] as Record<string, FieldDef>)[field];
  if (!def) throw new Error(`${name} has no field ${field} among the ones snap defines (src/criu-images/proto.ts)`);
  return def;
}

/** One field: its tag and value as CRIU's type for it says. An array is written one tag per element, as protobuf-c
 *  writes proto2 repeated fields; a Buffer for a varint field is a packed list (see packed()). */
function encodeField(name: MessageName, field: string, value: FieldValue, parts: Buffer[]): void {
  const [n, type] = definition(name, field);
  if (Array.isArray(value)) return value.forEach((v) => encodeField(name, field, v, parts));
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') {
    const v = BigInt(value);
    parts.push(varint(BigInt(n) << 3n), varint(type === 'sint32' || type === 'sint64' ? zigzag(v) : v));
    return;
  }
  if (typeof value === 'string' && type.startsWith('enum:')) {
    const number = (CRIU_ENUMS as Record<string, Record<string, number>>)[type.slice('enum:'.length)]?.[value];
    if (number === undefined) throw new Error(`${name}.${field}: ${value} is not among the values snap defines of ${type.slice('enum:'.length)}`);
    return encodeField(name, field, number, parts);
  }
  let bytes: Buffer;
  if (typeof value === 'string') bytes = Buffer.from(value, 'utf8');
  else if (Buffer.isBuffer(value)) bytes = value;
  else if (type.startsWith('message:')) bytes = message(type.slice('message:'.length) as MessageName, value as Values<MessageName>);
  else throw new Error(`${name}.${field} is a ${type}, not a message`);
  parts.push(varint((BigInt(n) << 3n) | 2n), varint(BigInt(bytes.length)), bytes);
}

/** A message of CRIU's `name` from its field values, written in the order given. */
export function message<M extends MessageName>(name: M, values: Values<M>): Buffer {
  const parts: Buffer[] = [];
  for (const [field, v] of Object.entries(values as MessageValues)) if (v !== undefined) encodeField(name, field, v, parts);
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

/**
 * A message of CRIU's `name` with its length-delimited `field` replaced by `change(old)`, every other field kept byte
 * for byte (so a real image can be edited in one place without re-encoding what this writer does not define).
 */
export function replaceField<M extends MessageName>(msg: Buffer, name: M, field: keyof (typeof CRIU_MESSAGES)[M] & string, change: (old: Buffer) => Buffer): Buffer {
  const [n] = definition(name, field);
  const parts: Buffer[] = [];
  let at = 0;
  let found = false;
  while (at < msg.length) {
    const start = at;
    const [keyValue, afterKey] = readVarint(msg, at);
    const key = Number(keyValue);
    const wire = key & 7;
    at = afterKey;
    if (wire === 0) at = readVarint(msg, at)[1];
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) {
      const [len, next] = readVarint(msg, at);
      at = next + Number(len);
      if (Math.floor(key / 8) === n) {
        const replaced = change(msg.subarray(next, at));
        parts.push(varint((BigInt(n) << 3n) | 2n), varint(BigInt(replaced.length)), replaced);
        found = true;
        continue;
      }
    } else throw new Error(`wire type ${wire}`);
    parts.push(msg.subarray(start, at));
  }
  if (!found) throw new Error(`no ${name}.${field} to replace`);
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
