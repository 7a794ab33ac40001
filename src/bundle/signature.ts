// Tamper evidence: an Ed25519 signature over the exact manifest bytes. The manifest holds every artifact's sha256,
// so a valid signature covers the whole bundle.

import { createPrivateKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto'
import { closeSync, constants, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { OutputPathError, UsageError } from '../errors.js'

// Public keys are read only by trust.ts (namedKey, the trusted keys), which first checks who could have written them.
function readPrivateKey(path: string): KeyObject {
  let pem: Buffer
  try {
    pem = readFileSync(path)
  } catch {
    throw new UsageError(`cannot read private key ${path}`, 'make one with `snap keygen`')
  }
  try {
    const key = createPrivateKey(pem)
    if (key.asymmetricKeyType !== 'ed25519') throw new Error('not ed25519')
    return key
  } catch {
    throw new UsageError(`${path} is not an Ed25519 private key in PEM form`, 'make one with `snap keygen`')
  }
}

export function signBytes(privateKeyPath: string, data: Buffer): Buffer {
  return sign(null, data, readPrivateKey(privateKeyPath))
}

function writeExclusive(path: string, data: string, mode: number): void {
  // Created with its final mode: the private key is never readable by others, not even for an instant.
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode)
  try {
    writeSync(fd, data)
  } finally {
    closeSync(fd)
  }
}

export function generateKeyPair(privatePath: string): { privatePath: string; publicPath: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const publicPath = `${privatePath}.pub`
  const dir = dirname(resolve(privatePath))
  try {
    // A fresh host has no /etc/procsnap: the key's directory is made, private (0700) as the key itself is.
    mkdirSync(dir, { recursive: true, mode: 0o700 })
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'EEXIST' || code === 'ENOTDIR') throw new OutputPathError(`${dir} is not a directory`, 'choose a path in a directory')
    if (code === 'EACCES' || code === 'EROFS') throw new OutputPathError(`cannot make the directory ${dir} (${code})`, 'choose a path this user may write')
    throw e
  }
  try {
    writeExclusive(privatePath, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600)
    try {
      writeExclusive(publicPath, publicKey.export({ type: 'spki', format: 'pem' }).toString(), 0o644)
    } catch (e) {
      // A private key whose .pub could not be written is a half pair that blocks the next keygen: take it back.
      unlinkSync(privatePath)
      throw e
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'EEXIST') throw new UsageError(`${privatePath} or ${publicPath} already exists`, 'choose another path')
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new OutputPathError(`directory ${dir} is gone`, 'try again, or choose another path')
    if (code === 'EACCES' || code === 'EROFS') throw new OutputPathError(`cannot write ${privatePath} (${code})`, 'choose a path this user may write')
    throw e
  }
  return { privatePath, publicPath }
}
