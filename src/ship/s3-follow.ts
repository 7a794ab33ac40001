// An upload that follows the bundle while it is sealed: the writer appends to its file in order and fills the head in
// last, so every byte past the head's room is final as soon as the file has grown past it. Those bytes go up as
// multipart parts while the seal goes on; the first part, which holds the head, goes once the bundle is whole. Once it
// is, the file is read through once: for its sha256, and to hold every part sent early to the bytes the file ended
// with (a part that differs, which an in-order writer never makes, is sent again), so the object is the file.

import { createHash } from 'node:crypto'
import { closeSync, constants, fstatSync, openSync, read, unlinkSync } from 'node:fs'
import { basename } from 'node:path'
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3'
import { UploadFailedError } from '../errors.js'
import { reclaimBuffers } from '../tools/reclaim.js'
import { failureText, s3Client } from './s3.js'
import { keyFor, s3Url, SIDECAR, type S3Location, type UploadResult } from './s3-location.js'

/** Every part but the last is this long: part N holds the file's bytes from (N - 1) * PART. */
const PART = 8 << 20
const IN_FLIGHT = 2
const POLL_MS = 100

export class FollowingUpload {
  private readonly s3: S3Client
  private key = ''
  private uploadId: Promise<string> | undefined
  private fd: number | undefined
  /** Where the next part sent early starts: the first part holds the head, sent last. */
  private next = PART
  /** Each part sent: its ETag and the sha256 of what was sent. */
  private readonly parts = new Map<number, { ETag: string; sha256: string }>()
  private readonly running = new Set<Promise<void>>()
  private failure: unknown
  private timer: NodeJS.Timeout | undefined
  /** Bytes whose parts were up before the bundle was whole. */
  private upBeforeWhole = 0
  private whole = false

  constructor(private readonly to: S3Location) {
    this.s3 = s3Client()
  }

  /** The writer's temporary file, as soon as it exists: the upload starts and follows it. */
  follow(partial: string | undefined, output: string): void {
    if (!partial || this.fd !== undefined) return
    try {
      this.fd = openSync(partial, constants.O_RDONLY | constants.O_NOFOLLOW)
    } catch (e) {
      this.failure = e
      return
    }
    this.key = keyFor(this.to.key, output)
    this.uploadId = this.s3
      .send(new CreateMultipartUploadCommand({ Bucket: this.to.bucket, Key: this.key, ContentType: 'application/octet-stream' }))
      .then((r) => r.UploadId!)
    this.uploadId.catch((e: unknown) => (this.failure ??= e))
    this.timer = setInterval(() => this.pump(false), POLL_MS)
    this.timer.unref()
  }

  /** Starts the parts the file now holds whole, up to IN_FLIGHT at once. `end`: the file is complete. */
  private pump(end: boolean): void {
    if (this.fd === undefined || this.failure) return
    const size = fstatSync(this.fd).size
    while (this.running.size < IN_FLIGHT && (this.next + PART <= size || (end && this.next < size))) {
      const from = this.next
      const length = Math.min(PART, size - from)
      this.next += length
      this.start(from / PART + 1, from, length)
    }
  }

  private start(partNumber: number, from: number, length: number): void {
    const p = this.uploadPart(partNumber, from, length)
      .catch((e: unknown) => {
        this.failure ??= e
      })
      .finally(() => {
        this.running.delete(p)
        this.pump(false)
      })
    this.running.add(p)
  }

  private async uploadPart(partNumber: number, from: number, length: number): Promise<void> {
    const body = Buffer.allocUnsafe(length)
    const got = await this.readAt(body, from)
    if (got < length) throw new Error(`the bundle ended at ${from + got} bytes while part ${partNumber} was read`)
    await this.send(partNumber, body)
    if (!this.whole) this.upBeforeWhole += length
    reclaimBuffers() // the part's 8 MiB, and the SDK's copies of it, freed now rather than after 64 MiB of them
  }

  private async send(partNumber: number, body: Buffer): Promise<void> {
    const r = await this.s3.send(new UploadPartCommand({ Bucket: this.to.bucket, Key: this.key, UploadId: await this.uploadId!, PartNumber: partNumber, Body: body }))
    this.parts.set(partNumber, { ETag: r.ETag!, sha256: createHash('sha256').update(body).digest('hex') })
  }

  /** Fills `buf` from `position` as far as the file goes; returns how much it got. */
  private async readAt(buf: Buffer, position: number): Promise<number> {
    let got = 0
    while (got < buf.length) {
      const n = await new Promise<number>((resolve, reject) => read(this.fd!, buf, got, buf.length - got, position + got, (e, r) => (e ? reject(e) : resolve(r))))
      if (n === 0) break
      got += n
    }
    return got
  }

  private async drain(): Promise<void> {
    for (;;) {
      this.pump(true)
      if (this.running.size === 0) return
      await Promise.race(this.running)
    }
  }

  /**
   * The bundle is whole under its final name: the rest of its parts and the head's go up, the upload is completed,
   * the sha256 (read once more from the page cache) written beside it and the object's size checked. A failure
   * keeps the bundle and says so; with `keepLocal` false, a checked upload removes it.
   */
  async finish(bundle: string, keepLocal: boolean): Promise<UploadResult> {
    clearInterval(this.timer)
    this.whole = true
    const url = s3Url({ bucket: this.to.bucket, key: this.key || keyFor(this.to.key, bundle) })
    const fail = (what: string, e?: unknown) =>
      new UploadFailedError(`uploading ${bundle} to ${url} failed: ${what}${e ? ` (${failureText(e)})` : ''}`, `the bundle is kept at ${bundle}; upload it again with the same command's --upload, or copy it by hand`)
    try {
      if (this.fd === undefined) throw fail('the bundle was never followed', this.failure)
      const size = fstatSync(this.fd).size
      await this.drain()
      if (this.failure) throw fail('a part did not upload', this.failure)
      const uploadId = await this.uploadId!
      // One pass over the whole file: its sha256, the head's part, and any part sent early that is not what the file
      // holds now sent again. One part's buffer at a time.
      const hash = createHash('sha256')
      const piece = Buffer.allocUnsafe(PART)
      try {
        for (let from = 0, partNumber = 1; from < size || partNumber === 1; from += PART, partNumber++) {
          const got = await this.readAt(piece.subarray(0, Math.min(PART, size - from)), from)
          const bytes = piece.subarray(0, got)
          hash.update(bytes)
          const sent = this.parts.get(partNumber)
          if (!sent || sent.sha256 !== createHash('sha256').update(bytes).digest('hex')) await this.send(partNumber, bytes)
          reclaimBuffers()
        }
        const parts = [...this.parts].sort(([a], [b]) => a - b).map(([PartNumber, p]) => ({ PartNumber, ETag: p.ETag }))
        await this.s3.send(new CompleteMultipartUploadCommand({ Bucket: this.to.bucket, Key: this.key, UploadId: uploadId, MultipartUpload: { Parts: parts } }))
      } catch (e) {
        throw fail('the upload did not complete', e)
      }
      const sha256 = hash.digest('hex')
      try {
        await this.s3.send(new PutObjectCommand({ Bucket: this.to.bucket, Key: this.key + SIDECAR, Body: `${sha256}  ${basename(this.key)}\n`, ContentType: 'text/plain' }))
        const object = await this.s3.send(new HeadObjectCommand({ Bucket: this.to.bucket, Key: this.key }))
        if (object.ContentLength !== size) throw fail(`the object is ${object.ContentLength ?? 'of unknown size'} bytes, the bundle ${size}`)
      } catch (e) {
        if (e instanceof UploadFailedError) throw e
        throw fail('the uploaded object could not be checked', e)
      }
      const whileSealed = this.upBeforeWhole
      if (keepLocal) return { url, size, sha256, whileSealed, kept: bundle }
      unlinkSync(bundle)
      return { url, size, sha256, whileSealed }
    } catch (e) {
      await this.abort()
      throw e
    } finally {
      this.close()
    }
  }

  /** Gives up: no object is left half made in the store (best effort: the store may be the thing that failed). */
  async abort(): Promise<void> {
    clearInterval(this.timer)
    const id = await this.uploadId?.catch(() => undefined)
    await Promise.allSettled([...this.running])
    if (id) await this.s3.send(new AbortMultipartUploadCommand({ Bucket: this.to.bucket, Key: this.key, UploadId: id })).catch(() => undefined)
    this.close()
  }

  private close(): void {
    if (this.fd !== undefined) closeSync(this.fd)
    this.fd = undefined
    this.s3.destroy()
  }
}
