// The shape-checked JSON reader bundles' JSON entries go through: what it accepts is what JSON.parse gives, however
// the bytes are cut into chunks; what is not the shape is refused at the first byte that shows it, naming where.
import { describe, expect, it } from 'vitest';
import { array, int, JsonShapeError, object, ShapedJsonParser, string, type Shape } from '../../src/bundle/json-stream.js';

const frame = object({ pc: string(18, { pattern: /^0x[0-9a-f]+$/ }), function: string(100, { nullable: true }), line: int(0, 1000, { nullable: true }) });
const stacks = array(object({ pid: int(1, 99999), comm: string(16), threads: array(object({ tid: int(0, 99999), frames: array(frame, 4) }), 3) }), 2);

function parse(shape: Shape, text: string | Buffer, chunk = Infinity, maxBytes = 1 << 20): unknown {
  const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text);
  const p = new ShapedJsonParser(shape, maxBytes);
  for (let at = 0; at < bytes.length; at += chunk) p.write(bytes.subarray(at, Math.min(bytes.length, at + chunk)));
  return p.end();
}

const good = [
  {
    pid: 42,
    comm: 'wörker "q"',
    threads: [
      { tid: 42, frames: [{ pc: '0x7f00', function: 'main\\n\u00e9\ud83d\ude00', line: 12 }, { pc: '0x1', function: null, line: null }] },
      { tid: 43, frames: [] },
    ],
  },
];

describe('ShapedJsonParser', () => {
  it('gives what JSON.parse gives, whatever the chunks (one byte at a time included), escapes and UTF-8 across them', () => {
    for (const text of [JSON.stringify(good), JSON.stringify(good, null, 2), JSON.stringify(good).replace(/"main/, '"\\u006dain')])
      for (const chunk of [1, 2, 3, 7, 64, Infinity]) expect(parse(stacks, text, chunk), `chunks of ${chunk}`).toEqual(JSON.parse(text));
  });

  it.each([
    ['nesting where an object belongs', '['.repeat(100_000) + ']'.repeat(100_000), /^\$\[0\]: expected an object, found an array$/],
    ['a non-array', '{"pid":1}', /^\$: expected an array, found an object$/],
    ['a string where an array belongs', '"x"', /^\$: expected an array, found a string$/],
    ['too many items', JSON.stringify([good[0], good[0], good[0]]), /^\$\[2\]: more than 2 items$/],
    ['a string too long', JSON.stringify([{ ...good[0], comm: 'x'.repeat(17) }]), /^\$\[0\]\.comm: a string of 17 characters, more than 16$/],
    ['an unknown key', JSON.stringify([{ ...good[0], extra: 1 }]), /^\$\[0\]: unexpected key "extra"$/],
    ['a missing key', JSON.stringify([{ pid: 1, comm: 'a' }]), /^\$\[0\]: no 'threads'$/],
    ['a key twice', '[{"pid":1,"pid":2,"comm":"a","threads":[]}]', /'pid' twice$/],
    ['a fraction', JSON.stringify([{ ...good[0], pid: 1.5 }]), /1\.5 is not an integer$/],
    ['an integer out of range', JSON.stringify([{ ...good[0], pid: 0 }]), /0 is outside 1\.\.99999$/],
    ['null where not allowed', JSON.stringify([{ ...good[0], comm: null }]), /expected a string, found null$/],
    ['a pattern not matched', JSON.stringify([{ ...good[0], threads: [{ tid: 1, frames: [{ pc: 'zz', function: null, line: null }] }] }]), /"zz" is not the form expected$/],
    ['data after the value', JSON.stringify([]) + ' []', /more data after the JSON value$/],
    ['a value cut short', JSON.stringify(good).slice(0, -3), /ends before its value does$/],
    ['a control character in a string', '[{"pid":1,"comm":"a\u0001","threads":[]}]', /control character/],
    ['a bad escape', '[{"pid":1,"comm":"\\q","threads":[]}]', /malformed escape/],
    ['not JSON', '[{"pid":01}]', /"01" is not JSON$/],
  ])('refuses %s, naming where', (_what, text, message) => {
    for (const chunk of [1, Infinity]) {
      let error: unknown;
      try {
        parse(stacks, text, chunk);
      } catch (e) {
        error = e;
      }
      expect(error, `chunks of ${chunk}`).toBeInstanceOf(JsonShapeError);
      expect((error as Error).message).toMatch(message);
    }
  });

  it('refuses more bytes than allowed as they come, and a string longer than its bound before it ends', () => {
    expect(() => parse(stacks, JSON.stringify(good), 8, 64)).toThrow(/more than 64 bytes/);
    const p = new ShapedJsonParser(array(string(10), 1), 1 << 30);
    p.write(Buffer.from('["'));
    expect(() => p.write(Buffer.alloc(1 << 20, 0x61))).toThrow(/a string longer than 10 characters/);
  });

  it('hands an array\'s items to its sink one by one, keeping none', () => {
    const seen: unknown[] = [];
    const value = parse(array(int(0, 9), 10, { sink: (v, i) => seen.push([i, v]) }), '[3, 1, 4]', 1);
    expect(value).toEqual([]);
    expect(seen).toEqual([[0, 3], [1, 1], [2, 4]]);
  });
});
