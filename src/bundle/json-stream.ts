// JSON from a bundle (stacks.json, core recipes) read as hostile input: bytes go in a chunk at a time and are checked
// against the shape snap writes as they arrive, so a wrong type, nesting deeper than the shape, an array longer than
// its bound or a string longer than its bound is refused at that byte, before anything is built from it. JSON.parse
// first and checking after cost gigabytes on a 64 MiB entry of nested arrays; here the memory is what the shape
// allows to be kept, whatever the bytes say, and an array can hand its items on one by one instead of holding them.

export class JsonShapeError extends Error {}

export type Shape = ArrayShape | ObjectShape | StringShape | IntShape

export interface ArrayShape {
  type: 'array'
  items: Shape
  /** The most items it may have; what the bound is, for the message ("the manifest's 4 threads"). */
  max: number
  maxWhy?: string
  /** Each item as it is complete, in place of keeping it: the array's value is then an empty array. */
  sink?: (item: unknown, index: number) => void
}

export interface ObjectShape {
  type: 'object'
  /** Every key it may have: any other is refused (these are snap's own formats). */
  fields: Readonly<Record<string, Shape>>
  /** Keys it must have; default: all of them. */
  required?: readonly string[]
}

export interface StringShape {
  type: 'string'
  /** The longest value, in characters. */
  max: number
  nullable?: boolean
  pattern?: RegExp
}

export interface IntShape {
  type: 'int'
  min: number
  max: number
  nullable?: boolean
}

export const array = (items: Shape, max: number, extra: Partial<Pick<ArrayShape, 'maxWhy' | 'sink'>> = {}): ArrayShape => ({ type: 'array', items, max, ...extra })
export const object = (fields: Record<string, Shape>, required?: readonly string[]): ObjectShape => ({ type: 'object', fields, required })
export const string = (max: number, extra: Partial<Pick<StringShape, 'nullable' | 'pattern'>> = {}): StringShape => ({ type: 'string', max, ...extra })
export const int = (min: number, max: number, extra: Partial<Pick<IntShape, 'nullable'>> = {}): IntShape => ({ type: 'int', min, max, ...extra })

/** A key longer than this is not one of a shape's keys. */
const MAX_KEY = 64
/** A number or a literal (null) longer than this is not one snap wrote. */
const MAX_ATOM = 32

type Step = 'first' | 'next' | 'colon' | 'value' | 'after'

interface Frame {
  shape: ArrayShape | ObjectShape
  value: unknown[] | Record<string, unknown>
  count: number
  step: Step
  key: string | undefined
  seen: Set<string> | undefined
}

const WS = new Uint8Array(256)
for (const c of [0x20, 0x09, 0x0a, 0x0d]) WS[c] = 1
const ATOM = new Uint8Array(256)
for (const c of '0123456789-+.eEabcdefghijklmnopqrstuvwxyz') ATOM[c.charCodeAt(0)] = 1

const describe = (s: Shape): string =>
  s.type === 'array' ? 'an array' : s.type === 'object' ? 'an object' : s.type === 'string' ? (s.nullable ? 'a string or null' : 'a string') : s.nullable ? 'an integer or null' : 'an integer'

/**
 * Push parser: write() each chunk, end() when the bytes end; both throw JsonShapeError on the first byte that is not
 * the shape, naming where ($[3].threads[1].frames) and what was wrong. end() gives the value.
 */
export class ShapedJsonParser {
  private readonly stack: Frame[] = []
  private root: unknown
  private done = false
  private bytes = 0
  /** Inside a string: its bytes so far, whether a backslash came, whether the last byte was one, its bound. */
  private str: { parts: Buffer[]; length: number; escaped: boolean; pendingEscape: boolean; limit: number; isKey: boolean } | undefined
  private atom: string | undefined

  constructor(
    private readonly shape: Shape,
    /** More bytes than this is refused as soon as they come. */
    private readonly maxBytes: number,
  ) {}

  private where(): string {
    let path = '$'
    for (const f of this.stack) {
      if (f.shape.type === 'array') path += `[${f.count}]`
      else if (f.key !== undefined && (f.step === 'colon' || f.step === 'value')) path += `.${f.key}`
    }
    return path
  }

  private fail(problem: string): never {
    throw new JsonShapeError(`${this.where()}: ${problem}`)
  }

  /** What the next value must be. */
  private expected(): Shape {
    const top = this.stack.at(-1)
    if (!top) return this.shape
    if (top.shape.type === 'array') return top.shape.items
    return top.shape.fields[top.key!]!
  }

  /** A value is about to start here: the container may take one more, and a value is what comes now. */
  private beginValue(): void {
    const top = this.stack.at(-1)
    if (!top) {
      if (this.done) this.fail('more data after the JSON value')
      return
    }
    if (top.shape.type === 'array') {
      if (top.step !== 'first' && top.step !== 'next') this.fail("expected ',' or ']'")
      if (top.count >= top.shape.max) this.fail(`more than ${top.shape.max} items${top.shape.maxWhy ? ` (${top.shape.maxWhy})` : ''}`)
    } else if (top.step !== 'value') {
      this.fail(top.step === 'colon' ? "expected ':'" : top.step === 'after' ? "expected ',' or '}'" : 'expected a key')
    }
  }

  /** A complete value, given to its container. */
  private deliver(value: unknown): void {
    const top = this.stack.at(-1)
    if (!top) {
      this.root = value
      this.done = true
      return
    }
    if (top.shape.type === 'array') {
      if (top.shape.sink) top.shape.sink(value, top.count)
      else (top.value as unknown[]).push(value)
      top.count++
    } else {
      ;(top.value as Record<string, unknown>)[top.key!] = value
      top.count++
    }
    top.step = 'after'
  }

  private open(kind: 'array' | 'object'): void {
    const top = this.stack.at(-1)
    const objectKey = top?.shape.type === 'object' && (top.step === 'first' || top.step === 'next')
    if (objectKey) this.fail('expected a key (a string)')
    this.beginValue()
    const shape = this.expected()
    if (shape.type !== kind) this.fail(`expected ${describe(shape)}, found ${kind === 'array' ? 'an array' : 'an object'}`)
    this.stack.push({
      shape,
      value: kind === 'array' ? [] : {},
      count: 0,
      step: 'first',
      key: undefined,
      seen: kind === 'object' ? new Set() : undefined,
    })
  }

  private close(kind: 'array' | 'object'): void {
    const top = this.stack.at(-1)
    if (!top || top.shape.type !== kind) this.fail(`unexpected '${kind === 'array' ? ']' : '}'}'`)
    if (top.step !== 'first' && top.step !== 'after') this.fail(`unexpected '${kind === 'array' ? ']' : '}'}'`)
    if (top.shape.type === 'object') {
      const shape = top.shape
      for (const k of shape.required ?? Object.keys(shape.fields)) if (!top.seen!.has(k)) this.fail(`no '${k}'`)
    }
    this.stack.pop()
    this.deliver(top.value)
  }

  private string(text: string): void {
    const top = this.stack.at(-1)
    if (top?.shape.type === 'object' && (top.step === 'first' || top.step === 'next')) {
      if (!Object.hasOwn(top.shape.fields, text)) this.fail(`unexpected key ${JSON.stringify(text.slice(0, MAX_KEY))}`)
      if (top.seen!.has(text)) this.fail(`'${text}' twice`)
      top.seen!.add(text)
      top.key = text
      top.step = 'colon'
      return
    }
    const shape = this.expected()
    if (shape.type !== 'string') this.fail(`expected ${describe(shape)}, found a string`)
    if (text.length > shape.max) this.fail(`a string of ${text.length} characters, more than ${shape.max}`)
    if (shape.pattern && !shape.pattern.test(text)) this.fail(`${JSON.stringify(text.slice(0, 80))} is not the form expected`)
    this.deliver(text)
  }

  private atomDone(text: string): void {
    const shape = this.expected()
    if (text === 'null') {
      if (!(shape.type === 'string' || shape.type === 'int') || !shape.nullable) this.fail(`expected ${describe(shape)}, found null`)
      return this.deliver(null)
    }
    if (text === 'true' || text === 'false') this.fail(`expected ${describe(shape)}, found ${text}`)
    if (!/^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$/.test(text)) this.fail(`${JSON.stringify(text)} is not JSON`)
    if (shape.type !== 'int') this.fail(`expected ${describe(shape)}, found a number`)
    if (!/^-?(0|[1-9][0-9]*)$/.test(text)) this.fail(`${text} is not an integer`)
    const n = Number(text)
    if (!Number.isSafeInteger(n) || n < shape.min || n > shape.max) this.fail(`${text} is outside ${shape.min}..${shape.max}`)
    this.deliver(n)
  }

  private startString(): void {
    const top = this.stack.at(-1)
    const isKey = top?.shape.type === 'object' && (top.step === 'first' || top.step === 'next')
    let limit = MAX_KEY
    if (!isKey) {
      this.beginValue()
      const shape = this.expected()
      if (shape.type !== 'string') this.fail(`expected ${describe(shape)}, found a string`)
      // An escape takes up to 6 bytes for one character, a character up to 4 bytes of UTF-8.
      limit = shape.max * 6 + 2
    }
    this.str = { parts: [], length: 0, escaped: false, pendingEscape: false, limit, isKey }
  }

  private finishString(): void {
    const s = this.str!
    this.str = undefined
    const raw = s.parts.length === 1 ? s.parts[0]! : Buffer.concat(s.parts)
    let text: string
    if (!s.escaped) text = raw.toString('utf8')
    else {
      try {
        text = JSON.parse(`"${raw.toString('utf8')}"`) as string
      } catch {
        this.fail('a string with a malformed escape')
      }
    }
    this.string(text)
  }

  write(chunk: Buffer): void {
    this.bytes += chunk.length
    if (this.bytes > this.maxBytes) throw new JsonShapeError(`more than ${this.maxBytes} bytes`)
    let i = 0
    const n = chunk.length
    while (i < n) {
      if (this.str) {
        const s = this.str
        const from = i
        let closed = false
        for (; i < n; i++) {
          const c = chunk[i]!
          if (s.pendingEscape) {
            s.pendingEscape = false
            continue
          }
          if (c === 0x5c) {
            s.escaped = true
            s.pendingEscape = true
          } else if (c === 0x22) {
            closed = true
            break
          } else if (c < 0x20) this.fail('a control character inside a string')
        }
        s.length += i - from
        if (s.length > s.limit) this.fail(s.isKey ? `a key longer than ${MAX_KEY} characters` : `a string longer than ${Math.floor((s.limit - 2) / 6)} characters`)
        // Copied unless used at once: the chunk's memory may be reused once write() returns.
        if (i > from) s.parts.push(closed ? chunk.subarray(from, i) : Buffer.from(chunk.subarray(from, i)))
        if (closed) {
          i++
          this.finishString()
        }
        continue
      }
      if (this.atom !== undefined) {
        const from = i
        while (i < n && ATOM[chunk[i]!]) i++
        this.atom += chunk.toString('latin1', from, i)
        if (this.atom.length > MAX_ATOM) this.fail(`a number or literal longer than ${MAX_ATOM} characters`)
        if (i < n) {
          const text = this.atom
          this.atom = undefined
          this.atomDone(text)
        }
        continue
      }
      const c = chunk[i]!
      if (WS[c]) {
        i++
        continue
      }
      i++
      switch (c) {
        case 0x7b: // {
          this.open('object')
          break
        case 0x5b: // [
          this.open('array')
          break
        case 0x7d: // }
          this.close('object')
          break
        case 0x5d: // ]
          this.close('array')
          break
        case 0x22: // "
          this.startString()
          break
        case 0x3a: {
          // :
          const top = this.stack.at(-1)
          if (top?.shape.type !== 'object' || top.step !== 'colon') this.fail("unexpected ':'")
          top.step = 'value'
          break
        }
        case 0x2c: {
          // ,
          const top = this.stack.at(-1)
          if (!top || top.step !== 'after') this.fail("unexpected ','")
          top.step = 'next'
          break
        }
        default: {
          if (!ATOM[c]) this.fail(`unexpected byte 0x${c.toString(16).padStart(2, '0')}`)
          const top = this.stack.at(-1)
          if (top?.shape.type === 'object' && (top.step === 'first' || top.step === 'next')) this.fail('expected a key (a string)')
          this.beginValue()
          this.atom = String.fromCharCode(c)
        }
      }
    }
  }

  /** The value, once the bytes have ended; refused if they ended inside it. */
  end(): unknown {
    if (this.atom !== undefined && !this.str) {
      const text = this.atom
      this.atom = undefined
      this.atomDone(text)
    }
    if (this.str || this.stack.length > 0 || !this.done) this.fail('the JSON ends before its value does')
    return this.root
  }
}
