// The README's exit-code table is what runbooks are written against: it must say exactly what the code does.
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { EXIT_CODES } from '../../src/errors.js'

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')

describe('README exit codes', () => {
  const rows = [...readme.matchAll(/^\| (\d+) \| `(\w+)` \| (.+) \|$/gm)].map((m) => ({ code: Number(m[1]), kind: m[2]!, meaning: m[3]! }))

  it('lists every exit code snap uses, with its kind and meaning as the code defines them', () => {
    const expected = Object.entries(EXIT_CODES).map(([kind, v]) => ({ code: v.code, kind, meaning: v.meaning }))
    expect(rows).toEqual(expected)
  })

  it('gives every kind of failure its own code', () => {
    const codes = Object.values(EXIT_CODES).map((v) => v.code)
    expect(new Set(codes).size).toBe(codes.length)
    expect(codes).not.toContain(0)
    expect(codes).not.toContain(1)
  })
})
