// snap's names and numbers for CRIU's image format (src/criu-images/) are CRIU's own: each message, field, enum value
// and magic snap reads is compared with the definitions CRIU's python package (pycriu) carries, decoded with snap's
// own protobuf reader. Without pycriu on this host there is nothing to compare with, and the test says so.
import { describe, expect, it } from 'vitest';
import * as imageFile from '../../src/criu-images/image-file.js';
import { VMA } from '../../src/criu-images/mm.js';
import { PE } from '../../src/criu-images/pagemap.js';
import { CRIU_ENUMS, CRIU_MESSAGES, type FieldDef } from '../../src/criu-images/proto.js';
import { findPycriuImages, readCriuProtoReference, type ReferenceField } from '../helpers/criu-proto-reference.js';

const dir = findPycriuImages();
const reference = dir ? readCriuProtoReference(dir) : undefined;
const title = dir ? 'CRIU\'s image format, as pycriu defines it' : 'CRIU\'s image format (skipped: pycriu, CRIU\'s python package, is not installed)';

/** A reference field as proto.ts writes a definition. */
function asDefinition(field: ReferenceField): FieldDef {
  const type = field.type === 'message' || field.type === 'enum' ? `${field.type}:${field.typeName}` : field.type;
  return (field.repeated ? [field.number, type, 'repeated'] : [field.number, type]) as FieldDef;
}

describe.skipIf(!reference)(title, () => {
  it('is read whole from pycriu: every image kind\'s messages and enums', () => {
    expect(reference!.messages.size).toBeGreaterThan(100);
    expect(reference!.messages.get('pstree_entry')?.get('pid')).toEqual({ number: 1, type: 'uint32', repeated: false });
  });

  it('names every message and field snap reads as CRIU does, with CRIU\'s number, type and label', () => {
    const differences: string[] = [];
    for (const [message, fields] of Object.entries(CRIU_MESSAGES)) {
      const theirs = reference!.messages.get(message);
      if (!theirs) {
        differences.push(`${message}: no such message in CRIU`);
        continue;
      }
      for (const [name, def] of Object.entries(fields) as [string, FieldDef][]) {
        const field = theirs.get(name);
        if (!field) differences.push(`${message}.${name}: no such field in CRIU`);
        else if (JSON.stringify(asDefinition(field)) !== JSON.stringify(def))
          differences.push(`${message}.${name}: snap has ${JSON.stringify(def)}, CRIU ${JSON.stringify(asDefinition(field))}`);
      }
    }
    expect(differences).toEqual([]);
  });

  it('gives every enum value snap compares with CRIU\'s number', () => {
    for (const [name, values] of Object.entries(CRIU_ENUMS)) {
      const theirs = reference!.enums.get(name);
      expect(theirs, name).toBeDefined();
      for (const [value, number] of Object.entries(values)) expect(theirs!.get(value), `${name}.${value}`).toBe(number);
    }
  });

  it('knows each image by CRIU\'s magic, and the mapping status and pagemap flag bits by CRIU\'s values', () => {
    const magics = Object.entries(imageFile).filter(([name]) => name.endsWith('_MAGIC'));
    expect(magics.length).toBeGreaterThan(5);
    for (const [name, value] of magics) expect(reference!.magics.get(name.replace(/_MAGIC$/, '')), name).toBe(value);
    for (const [name, bit] of Object.entries(VMA)) expect(reference!.flags.get(`VMA_${name}`), `VMA_${name}`).toBe(bit);
    for (const [name, bit] of Object.entries(PE)) expect(reference!.flags.get(`PE_${name}`), `PE_${name}`).toBe(bit);
  });
});
