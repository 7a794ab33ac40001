// Bundle compression: zstd (default, every core), gzip, or none; recognised on read from the first bytes.

import { availableParallelism } from 'node:os'
import type { Transform } from 'node:stream'
import zlib from 'node:zlib'

export type Compression = 'zstd' | 'gzip' | 'none'
export const COMPRESSIONS: Compression[] = ['zstd', 'gzip', 'none']

export const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd])
export const GZIP_MAGIC = Buffer.from([0x1f, 0x8b])

export function detectCompression(head: Buffer): Compression | 'unknown' {
  if (head.subarray(0, 4).equals(ZSTD_MAGIC)) return 'zstd'
  if (head.subarray(0, 2).equals(GZIP_MAGIC)) return 'gzip'
  // A POSIX tar header has "ustar" at offset 257.
  if (head.length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar') return 'none'
  return 'unknown'
}

export function compressor(c: Compression): Transform | undefined {
  if (c === 'zstd')
    return zlib.createZstdCompress({
      params: {
        [zlib.constants.ZSTD_c_compressionLevel]: 3,
        [zlib.constants.ZSTD_c_nbWorkers]: availableParallelism(),
        [zlib.constants.ZSTD_c_checksumFlag]: 1,
      },
    })
  if (c === 'gzip') return zlib.createGzip({ level: 6 })
  return undefined
}

export function decompressor(c: Compression): Transform | undefined {
  if (c === 'zstd') return zlib.createZstdDecompress()
  if (c === 'gzip') return zlib.createGunzip()
  return undefined
}

export const EXTENSION: Record<Compression, string> = { zstd: '.tar.zst', gzip: '.tar.gz', none: '.tar' }
