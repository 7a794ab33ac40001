// Bundles to and from S3 or any S3-compatible store. Endpoint, region and credentials come from the AWS SDK's own
// environment and profile chain (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_PROFILE, ...), so a host set
// up for the aws CLI needs nothing more. Each bundle object has a sidecar, KEY.sha256 (`sha256sum` format), written
// once the bundle is up: fetch holds the download to it.

import { createHash, randomBytes } from 'node:crypto'
import { closeSync, constants, createWriteStream, fsyncSync, linkSync, openSync, unlinkSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'
import { BundleInvalidError, OutputPathError, UploadFailedError, UsageError } from '../errors.js'
import { s3Url, SIDECAR, type S3Location } from './s3-location.js'

/** Attempts per request (the SDK's own retry with backoff, for throttling, 5xx and dropped connections). */
const ATTEMPTS = 5
const BUNDLE_KEY = /\.(tar\.zst|tar\.gz|tar|snap|age)$/

export function s3Client(): S3Client {
  // A store of its own (AWS_ENDPOINT_URL) is reached by path: most S3-compatible servers, and any on an IP address,
  // have no per-bucket host names.
  const ownEndpoint = !!(process.env.AWS_ENDPOINT_URL_S3 || process.env.AWS_ENDPOINT_URL)
  return new S3Client({ maxAttempts: ATTEMPTS, forcePathStyle: ownEndpoint })
}

/** The SDK's error in one line: its name and message, or the network error under it. */
export function failureText(e: unknown): string {
  const err = e as Error & { $metadata?: { httpStatusCode?: number }; code?: string; cause?: { code?: string } }
  const status = err.$metadata?.httpStatusCode
  const code = err.code ?? err.cause?.code
  return [err.name && err.name !== 'Error' ? err.name : undefined, err.message, status ? `HTTP ${status}` : undefined, code && !err.message.includes(code) ? code : undefined]
    .filter(Boolean)
    .join(': ')
}

export interface FetchResult {
  url: string
  path: string
  size: number
  sha256: string
}

/**
 * Downloads a bundle to a new 0600 file (never over an existing one), hashing it as it streams, and holds it to its
 * sidecar's sha256 and the object's size: a mismatch removes what was written (exit 11).
 */
export async function fetchBundle(from: S3Location, output: string | undefined): Promise<FetchResult> {
  if (!from.key || from.key.endsWith('/')) throw new UsageError(`${s3Url(from)} names no object`, 'give s3://BUCKET/KEY of a bundle (see `procsnap list s3://BUCKET/PREFIX`)')
  const url = s3Url(from)
  const path = output ?? basename(from.key)
  const s3 = s3Client()
  const partial = join(dirname(path), `.${basename(path)}.fetch-${process.pid}-${randomBytes(4).toString('hex')}`)
  let fd: number | undefined
  try {
    let expected: string
    try {
      const side = await s3.send(new GetObjectCommand({ Bucket: from.bucket, Key: from.key + SIDECAR }))
      expected = ((await side.Body?.transformToString()) ?? '').trim().split(/\s+/)[0] ?? ''
    } catch (e) {
      throw new BundleInvalidError(`${url}${SIDECAR}, the sha256 the upload recorded, cannot be read (${failureText(e)})`, [url], 'fetch a bundle uploaded by `procsnap dump --upload`')
    }
    if (!/^[0-9a-f]{64}$/.test(expected)) throw new BundleInvalidError(`${url}${SIDECAR} holds no sha256`, [url])
    let obj
    try {
      obj = await s3.send(new GetObjectCommand({ Bucket: from.bucket, Key: from.key }))
    } catch (e) {
      throw new UploadFailedError(`cannot download ${url} (${failureText(e)})`, 'check the URL with `procsnap list s3://BUCKET/PREFIX`, and the credentials')
    }
    try {
      fd = openSync(partial, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
    } catch (e) {
      throw new OutputPathError(`cannot write into ${dirname(path)} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'give -o a path in a directory you can write')
    }
    const hash = createHash('sha256')
    let size = 0
    const body = obj.Body as NodeJS.ReadableStream
    await pipeline(
      body,
      new Transform({
        transform(chunk: Buffer, _e, cb) {
          hash.update(chunk)
          size += chunk.length
          cb(null, chunk)
        },
      }),
      createWriteStream('', { fd, autoClose: false }),
    )
    fsyncSync(fd)
    const sha256 = hash.digest('hex')
    if (sha256 !== expected || (obj.ContentLength !== undefined && obj.ContentLength !== size))
      throw new BundleInvalidError(`${url} does not match the sha256 its upload recorded (got ${sha256}, ${size} bytes)`, [url], 'the object was changed or cut in the store; nothing was kept')
    try {
      linkSync(partial, path)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new OutputPathError(`${path} already exists`, 'choose another -o; snap never overwrites')
      throw e
    }
    return { url, path, size, sha256 }
  } finally {
    if (fd !== undefined) closeSync(fd)
    try {
      unlinkSync(partial)
    } catch {
      // never made
    }
    s3.destroy()
  }
}

export interface ListedObject {
  url: string
  size: number
  lastModified: string
  /** The sha256 recorded beside it, when there is a sidecar. */
  hasSha256: boolean
}

/** The bundles under a prefix (sidecars left out), newest first. */
export async function listObjects(at: S3Location): Promise<ListedObject[]> {
  const s3 = s3Client()
  const all: { Key?: string; Size?: number; LastModified?: Date }[] = []
  try {
    let token: string | undefined
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: at.bucket, Prefix: at.key || undefined, ContinuationToken: token }))
      all.push(...(page.Contents ?? []))
      token = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (token)
  } catch (e) {
    throw new UploadFailedError(`cannot list ${s3Url(at)} (${failureText(e)})`, 'check the bucket name, the endpoint (AWS_ENDPOINT_URL) and the credentials')
  } finally {
    s3.destroy()
  }
  const keys = new Set(all.map((o) => o.Key))
  return all
    .filter((o) => o.Key && BUNDLE_KEY.test(o.Key))
    .map((o) => ({ url: s3Url({ bucket: at.bucket, key: o.Key! }), size: o.Size ?? 0, lastModified: o.LastModified?.toISOString() ?? '', hasSha256: keys.has(o.Key + SIDECAR) }))
    .sort((a, b) => b.lastModified.localeCompare(a.lastModified))
}
