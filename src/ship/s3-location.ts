// Where a bundle is in an S3-compatible store, apart from the SDK that reaches it: a command that takes an s3:// URL
// checks it at once, and loads the SDK (90 ms of modules here) only when it has something to send.

import { basename } from 'node:path'
import { UsageError } from '../errors.js'

/** Beside each bundle object, its sha256 (`sha256sum` format), written once the bundle is up. */
export const SIDECAR = '.sha256'

export interface S3Location {
  bucket: string
  /** The key, or the prefix of keys (no leading slash; '' for the bucket's root). */
  key: string
}

export function parseS3Url(url: string): S3Location {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url)
  if (!m) throw new UsageError(`${url} is not an s3:// URL`, 'give s3://BUCKET/PREFIX')
  return { bucket: m[1]!, key: (m[2] ?? '').replace(/^\/+/, '') }
}

export const s3Url = (l: S3Location): string => `s3://${l.bucket}/${l.key}`

/** Where a bundle goes under a prefix: the prefix taken as a directory, the bundle's own name under it. */
export function keyFor(prefix: string, file: string): string {
  const p = prefix.replace(/\/+$/, '')
  return p ? `${p}/${basename(file)}` : basename(file)
}

export interface UploadResult {
  url: string
  size: number
  sha256: string
  /** Bytes uploaded while the bundle was still being sealed (an upload that follows the seal). */
  whileSealed?: number
  /** The local bundle, when it was kept. */
  kept?: string
}

