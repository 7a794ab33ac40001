// CRIU's own definition of its image format, as its python package pycriu carries it: each pycriu/images/*_pb2.py
// embeds its .proto file as a serialized FileDescriptorProto, read here with snap's own protobuf reader (no
// google.protobuf needed). The reference the image-format test holds src/criu-images/proto.ts to; magic.py and
// pb2dict.py give the image magics and the VMA status and pagemap flag bits the same way.

import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { decodeMessage, messagesField, textField, uintField } from '../../src/criu-images/wire.js'
import { CRIT } from './crit-reference.js'

/** google/protobuf/descriptor.proto, the few fields read here. */
const FileDescriptorProto = { message_type: 4, enum_type: 5 } as const
const DescriptorProto = { name: 1, field: 2, nested_type: 3, enum_type: 4 } as const
const FieldDescriptorProto = { name: 1, number: 3, label: 4, type: 5, type_name: 6 } as const
const EnumDescriptorProto = { name: 1, value: 2 } as const
const EnumValueDescriptorProto = { name: 1, number: 2 } as const

/** FieldDescriptorProto.Type, by number. */
const TYPE_NAMES: Record<number, string> = {
  1: 'double', 2: 'float', 3: 'int64', 4: 'uint64', 5: 'int32', 6: 'fixed64', 7: 'fixed32', 8: 'bool', 9: 'string',
  10: 'group', 11: 'message', 12: 'bytes', 13: 'uint32', 14: 'enum', 15: 'sfixed32', 16: 'sfixed64', 17: 'sint32', 18: 'sint64',
}
const LABEL_REPEATED = 3

export interface ReferenceField {
  number: number
  type: string
  repeated: boolean
  /** For a message or enum field, the type it names (without the leading dot). */
  typeName?: string
}

export interface CriuProtoReference {
  /** Where the definitions were read. */
  dir: string
  /** Message name (nested ones as outer.inner) -> field name -> its definition. */
  messages: Map<string, Map<string, ReferenceField>>
  /** Enum name (nested ones as outer.inner) -> value name -> number. */
  enums: Map<string, Map<string, number>>
  /** magic.py: image name (PSTREE, CORE, ...) -> magic. */
  magics: Map<string, number>
  /** pb2dict.py's flag tables: VMA_AREA_* and PE_* -> bit. */
  flags: Map<string, number>
}

/** pycriu's images directory: in the prefix of the crit the e2e tests use (criu's own python package beside it), on
 *  PYTHONPATH, else in the system's python3 packages. */
export function findPycriuImages(): string | undefined {
  const candidates = [
    join(dirname(dirname(CRIT)), 'criu', 'usr', 'lib', 'python3', 'dist-packages', 'pycriu', 'images'),
    ...(process.env.PYTHONPATH ?? '').split(':').filter(Boolean).map((p) => join(p, 'pycriu', 'images')),
    '/usr/lib/python3/dist-packages/pycriu/images',
  ]
  return candidates.find((dir) => existsSync(join(dir, 'pstree_pb2.py')))
}

/** The bytes of a python bytes literal's body (between its quotes), with python's escapes. */
export function pythonBytes(body: string): Buffer {
  const out: number[] = []
  const simple: Record<string, number> = { n: 10, r: 13, t: 9, a: 7, b: 8, f: 12, v: 11, '\\': 92, "'": 39, '"': 34 }
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!
    if (c !== '\\') {
      out.push(c.charCodeAt(0))
      continue
    }
    const e = body[++i]!
    if (e in simple) out.push(simple[e]!)
    else if (e === 'x') {
      out.push(parseInt(body.slice(i + 1, i + 3), 16))
      i += 2
    } else if (/[0-7]/.test(e)) {
      const digits = /^[0-7]{1,3}/.exec(body.slice(i))![0]
      out.push(parseInt(digits, 8))
      i += digits.length - 1
    } else if (e === '\n') continue
    else out.push(92, e.charCodeAt(0)) // python keeps an unknown escape as it is
  }
  return Buffer.from(out)
}

/** The serialized FileDescriptorProto a *_pb2.py embeds. */
export function serializedDescriptor(source: string, file: string): Buffer {
  const m = /AddSerializedFile\(b'((?:[^'\\]|\\.)*)'\)/s.exec(source)
  if (!m) throw new Error(`${file} embeds no serialized descriptor`)
  return pythonBytes(m[1]!)
}

export function readCriuProtoReference(dir: string): CriuProtoReference {
  const messages: CriuProtoReference['messages'] = new Map()
  const enums: CriuProtoReference['enums'] = new Map()
  const addEnum = (raw: Buffer, prefix: string) => {
    const e = decodeMessage(raw)
    const values = new Map<string, number>()
    for (const v of messagesField(e, EnumDescriptorProto.value))
      values.set(textField(v, EnumValueDescriptorProto.name)!, Number(BigInt.asIntN(32, BigInt(uintField(v, EnumValueDescriptorProto.number) ?? 0))))
    enums.set(prefix + textField(e, EnumDescriptorProto.name)!, values)
  }
  const addMessage = (raw: Buffer, prefix: string) => {
    const m = decodeMessage(raw)
    const name = prefix + textField(m, DescriptorProto.name)!
    const fields = new Map<string, ReferenceField>()
    for (const f of messagesField(m, DescriptorProto.field)) {
      const typeName = textField(f, FieldDescriptorProto.type_name)
      fields.set(textField(f, FieldDescriptorProto.name)!, {
        number: uintField(f, FieldDescriptorProto.number)!,
        type: TYPE_NAMES[uintField(f, FieldDescriptorProto.type)!] ?? 'unknown',
        repeated: uintField(f, FieldDescriptorProto.label) === LABEL_REPEATED,
        ...(typeName ? { typeName: typeName.replace(/^\./, '') } : {}),
      })
    }
    messages.set(name, fields)
    for (const nested of (m.get(DescriptorProto.nested_type) ?? []) as Buffer[]) addMessage(nested, `${name}.`)
    for (const nested of (m.get(DescriptorProto.enum_type) ?? []) as Buffer[]) addEnum(nested, `${name}.`)
  }
  for (const file of readdirSync(dir).filter((f) => f.endsWith('_pb2.py')).sort()) {
    const fd = decodeMessage(serializedDescriptor(readFileSync(join(dir, file), 'utf8'), file))
    for (const raw of (fd.get(FileDescriptorProto.message_type) ?? []) as Buffer[]) addMessage(raw, '')
    for (const raw of (fd.get(FileDescriptorProto.enum_type) ?? []) as Buffer[]) addEnum(raw, '')
  }

  const magics = new Map<string, number>()
  for (const m of readFileSync(join(dir, 'magic.py'), 'utf8').matchAll(/^by_name\['(\w+)'\] = (\d+)$/gm)) magics.set(m[1]!, Number(m[2]))
  const flags = new Map<string, number>()
  for (const m of readFileSync(join(dir, 'pb2dict.py'), 'utf8').matchAll(/\('((?:VMA|PE)_\w+)', (\d+) << (\d+)\)/g))
    flags.set(m[1]!, Number(m[2]) * 2 ** Number(m[3]))
  return { dir, messages, enums, magics, flags }
}
