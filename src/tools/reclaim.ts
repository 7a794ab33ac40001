// Memory that a stream has finished with, given back as the stream goes. A Buffer's memory lives outside V8's heap,
// and V8 frees it only when it collects the Buffer object, which it does after about 64 MiB of such memory has
// piled up: reading a bundle (each chunk read, each chunk decompressed, a fresh Buffer) held 70 MiB of dead chunks
// at its peak here, whatever the bundle's size. A young-generation collection every few MiB frees them while they
// are young: snap verify of a 512 MiB bundle peaked at 111 MiB instead of 164 MiB, in the same time.

import v8 from 'node:v8'
import vm from 'node:vm'

type Collect = (options?: { type?: 'minor' | 'major' }) => void

let collect: Collect | null | undefined

function collector(): Collect | null {
  if (collect !== undefined) return collect
  try {
    // The collector is not exposed by default; asked for at run time, it appears in contexts made after that.
    if (typeof (globalThis as { gc?: Collect }).gc === 'function') collect = (globalThis as { gc?: Collect }).gc!
    else {
      v8.setFlagsFromString('--expose-gc')
      collect = vm.runInNewContext('gc') as Collect
    }
  } catch {
    collect = null // then V8 collects in its own time: more memory, nothing else changes
  }
  return collect
}

/** Frees the Buffers already dropped (a minor collection, well under a millisecond for snap's young generation). */
export function reclaimBuffers(): void {
  collector()?.({ type: 'minor' })
}

/** Calls reclaimBuffers() each time `every` more bytes have gone through. */
export function reclaimEvery(every: number): (bytesSoFar: number) => void {
  let last = 0
  return (bytes) => {
    if (bytes - last < every) return
    last = bytes
    reclaimBuffers()
  }
}
