// What a process's stacks are, as gdb's script and the dump write them (stacks.json) and as a reader holds them to:
// every thread's frames, native and in the process's own language, each string and count bounded.

import { array, int, object, string, type ArrayShape, type ObjectShape } from '../bundle/json-stream.js'
import type { RuntimeRecord } from './runtimes/detect.js'
import { MAX_GOROUTINE_FRAMES, MAX_GOROUTINES, type Goroutine } from './runtimes/go.js'
import { MAX_RUNTIME_FRAMES, runtimeFrameShape, type RuntimeFrame } from './runtimes/python.js'

export interface Frame {
  pc: string
  function: string | null
  file: string | null
  line: number | null
  /** The shared library the pc is in, when not the executable. */
  library: string | null
}

export interface ThreadStack {
  tid: number
  frames: Frame[]
  /** The thread's name in its language (Python's threading name), when its runtime's reader gave one. */
  name?: string | null
  /** Its frames in the process's language, innermost first: Python's function, file and line; Java's
   *  class.method and line. */
  runtimeFrames?: RuntimeFrame[]
  /** Java: the thread's state as jstack prints it ("WAITING (on object monitor)"). */
  state?: string | null
}

export interface ProcessStacks {
  pid: number
  comm: string
  exe: string | null
  threads: ThreadStack[]
  /** The language runtime the core shows (libpython, a pythonX.Y executable, libjvm.so, Go's build info). */
  runtime?: RuntimeRecord
  /** Go: every goroutine with its state and frames, innermost first (the first MAX_GOROUTINES, within the room
   *  stacks.json has for the process). */
  goroutines?: Goroutine[]
  /** Go: the goroutines left out past that. */
  goroutinesOmitted?: number
  /** Why the threads have no frames of that language (its reader is not installed, or failed on this core). */
  runtimeError?: string
}

/** Deeper than this is a loop in a corrupt stack, not a program. */
export const MAX_FRAMES = 256

// The stacks as gdb's script below and the dump write them, as the shape a reader holds them to: every string
// bounded (a demangled C++ name runs to a few KiB, a path to PATH_MAX), at most MAX_FRAMES frames a thread.
const frameShape = object({
  pc: string(18, { pattern: /^0x[0-9a-f]{1,16}$/ }),
  function: string(16384, { nullable: true }),
  file: string(4096, { nullable: true }),
  line: int(0, 2 ** 31 - 1, { nullable: true }),
  library: string(4096, { nullable: true }),
})
const threadShape = object(
  {
    tid: int(0, 2 ** 31 - 1),
    frames: array(frameShape, MAX_FRAMES, { maxWhy: 'the frames snap unwinds' }),
    name: string(4096, { nullable: true }),
    state: string(256, { nullable: true }),
    runtimeFrames: array(runtimeFrameShape, MAX_RUNTIME_FRAMES, { maxWhy: 'the language frames snap reads' }),
  },
  ['tid', 'frames'],
)
const goroutineShape = object({
  id: int(0, 2 ** 53 - 1),
  state: string(256, { nullable: true }),
  thread: int(0, 2 ** 31 - 1, { nullable: true }),
  frames: array(runtimeFrameShape, MAX_GOROUTINE_FRAMES, { maxWhy: 'the goroutine frames snap reads' }),
})
const runtimeShape = object({ name: string(16, { pattern: /^[a-z]+$/ }), version: string(256, { nullable: true }), file: string(8192) })

/** A process's threads, as gdb's script writes them; at most `maxThreads`. */
export const threadsShape = (maxThreads: number, maxWhy?: string): ArrayShape => array(threadShape, maxThreads, { maxWhy })

/** One process's stacks, as stacks.json holds them; at most `maxThreads` threads. */
export const processStacksShape = (maxThreads: number, maxWhy?: string): ObjectShape =>
  object(
    {
      pid: int(0, 2 ** 31 - 1),
      comm: string(256),
      exe: string(8192, { nullable: true }),
      threads: threadsShape(maxThreads, maxWhy),
      runtime: runtimeShape,
      runtimeError: string(4096),
      goroutines: array(goroutineShape, MAX_GOROUTINES, { maxWhy: 'the goroutines snap reads' }),
      goroutinesOmitted: int(0, 2 ** 31 - 1),
    },
    ['pid', 'comm', 'exe', 'threads'],
  )

/** What gdb's script may write for one core: a thread count no core of a real process reaches. */
