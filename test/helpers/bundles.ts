// Crafts bundles by hand, one raw tar header at a time, so the tests can hand snap the hostile input a real tar tool
// would refuse to make (links, devices, '..' and absolute names, duplicates, sizes that lie), and re-packs real
// bundles after changing one thing in them. Independent of src/bundle/, so it can judge what src/ does.
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { arch, release } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import type { ArtifactRecord, Manifest } from '../../src/bundle/manifest.js';
import { extractBundle, readExtractedManifest } from './bundle.js';

const execFileAsync = promisify(execFile);

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'chardev' | 'blockdev' | 'dir' | 'fifo';

export interface TarEntry {
  name: string;
  type?: TarEntryType;
  data?: Buffer;
  linkname?: string;
  mode?: number;
  /** For chardev/blockdev. */
  device?: { major: number; minor: number };
}

const TYPEFLAG: Record<TarEntryType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  chardev: '3',
  blockdev: '4',
  dir: '5',
  fifo: '6',
};

const BLOCK = 512;

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

/** One POSIX ustar header block, checksum included. */
export function tarHeader(entry: TarEntry, size: number): Buffer {
  const header = Buffer.alloc(BLOCK);
  const type = entry.type ?? 'file';
  if (Buffer.byteLength(entry.name) > 100) throw new Error(`tar name too long for a plain ustar header: ${entry.name}`);
  header.write(entry.name, 0, 100, 'utf8');
  header.write(octal(entry.mode ?? (type === 'dir' ? 0o700 : 0o600), 8), 100, 'latin1');
  header.write(octal(0, 8), 108, 'latin1'); // uid
  header.write(octal(0, 8), 116, 'latin1'); // gid
  header.write(octal(size, 12), 124, 'latin1');
  header.write(octal(Math.floor(Date.now() / 1000), 12), 136, 'latin1');
  header.fill(' ', 148, 156); // the checksum is computed with its own field as spaces
  header.write(TYPEFLAG[type], 156, 'latin1');
  if (entry.linkname) header.write(entry.linkname, 157, 100, 'utf8');
  header.write('ustar\0', 257, 'latin1');
  header.write('00', 263, 'latin1');
  header.write('root', 265, 'latin1');
  header.write('root', 297, 'latin1');
  header.write(octal(entry.device?.major ?? 0, 8), 329, 'latin1');
  header.write(octal(entry.device?.minor ?? 0, 8), 337, 'latin1');
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return header;
}

/** A whole tar archive: each entry's header, its data padded to 512 bytes, then the two zero end blocks. */
export function buildTar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    const data = entry.type === undefined || entry.type === 'file' ? (entry.data ?? Buffer.alloc(0)) : Buffer.alloc(0);
    parts.push(tarHeader(entry, data.length), data);
    const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
    if (pad) parts.push(Buffer.alloc(pad));
  }
  parts.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(parts);
}

export interface RawTarEntry {
  name: string;
  typeflag: string;
  size: number;
  header: Buffer;
  data: Buffer;
}

/** Walks an uncompressed tar (ustar or GNU, no pax long names needed for bundles) and returns every entry. */
export function readRawTar(tar: Buffer): RawTarEntry[] {
  const entries: RawTarEntry[] = [];
  let offset = 0;
  let longName: string | undefined;
  while (offset + BLOCK <= tar.length) {
    const header = tar.subarray(offset, offset + BLOCK);
    if (header.every((b) => b === 0)) break;
    const field = (start: number, length: number) => header.subarray(start, start + length).toString('utf8').replace(/\0.*$/s, '');
    const size = parseInt(field(124, 12).trim() || '0', 8);
    const typeflag = field(156, 1) || '0';
    const prefix = field(345, 155);
    const data = tar.subarray(offset + BLOCK, offset + BLOCK + size);
    offset += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    if (typeflag === 'L') {
      longName = data.toString('utf8').replace(/\0.*$/s, '');
      continue;
    }
    const name = longName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    longName = undefined;
    entries.push({ name, typeflag, size, header, data });
  }
  return entries;
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export function artifactRecord(path: string, data: Buffer, kind: ArtifactRecord['kind'] = 'criu-image'): ArtifactRecord {
  return { path, kind, size: data.length, sha256: sha256(data) };
}

/**
 * A manifest that passes the v1 schema, for a process that never existed here (pid 4194301, near pid_max), so that
 * nothing a crafted bundle says can ever match a real process.
 */
export function craftedManifest(artifacts: ArtifactRecord[]): Manifest {
  const now = new Date().toISOString();
  const pid = 4194301;
  return {
    format: 'procsnap-bundle',
    schemaVersion: 1,
    tool: { name: 'procsnap', version: '0.1.0' },
    createdAt: now,
    mode: 'standard',
    host: { hostname: 'crafted', kernelRelease: release(), arch: arch(), bootId: '00000000-0000-0000-0000-000000000000', machineIdSha256: null },
    custody: { uid: 0, user: 'root', argv: ['dump', String(pid)], cwd: '/', startedAt: now },
    target: {
      pid,
      ppid: 1,
      pgid: pid,
      sid: pid,
      ttyNr: 0,
      comm: 'crafted',
      exe: '/bin/true',
      exeSha256: null,
      exeSize: null,
      cmdline: ['/bin/true'],
      cwd: '/',
      uid: 0,
      gid: 0,
      startTime: 1,
      threads: 1,
      threadIds: [pid],
      vmRssKiB: null,
      cgroup: '0::/',
      namespaces: {},
      envNames: [],
      openFiles: [],
      mappedFiles: [],
      treePids: [pid],
    },
    originalState: { state: 'running', threads: [{ tid: pid, state: 'S' }] },
    normalization: { action: 'sigstop', conversionWindowUs: null, settleMs: 0, note: 'crafted by the tests' },
    steps: [],
    freezeWindowMs: 0,
    finalState: 'running',
    tools: { criu: { path: '/usr/local/sbin/criu', version: '4.1.1', options: [] }, gdb: { path: '/usr/bin/gdb', version: '13.1' } },
    artifacts,
    warnings: [],
    signed: false,
  };
}

export function manifestEntry(manifest: Manifest): TarEntry {
  return { name: 'manifest.json', data: Buffer.from(JSON.stringify(manifest, null, 2) + '\n') };
}

/** Writes a crafted archive as a bundle file: zstd-compressed like the real thing, or a plain tar. */
export function writeCraftedBundle(path: string, entries: TarEntry[], compression: 'zstd' | 'none' = 'zstd'): string {
  const tar = buildTar(entries);
  writeFileSync(path, compression === 'zstd' ? zlib.zstdCompressSync(tar) : tar, { mode: 0o600 });
  return path;
}

/** The uncompressed tar stream of a bundle (zstd or plain). The system zstd, because a bundle may hold several
 *  frames (and skippable ones) and Node's one-shot zstdDecompressSync stops after the first. */
export function decompressBundle(path: string): Buffer {
  const raw = readFileSync(path);
  if (!raw.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return raw;
  return execFileSync('zstd', ['-dc', path], { maxBuffer: 2 ** 32 });
}

/**
 * Re-packs a real bundle after `change` has edited its extracted files: manifest.json first, manifest.sig if there
 * is one, then the artifacts in the manifest's order, zstd-compressed by the system tar, exactly the layout snap
 * writes. Returns the new bundle's path.
 */
export async function repackBundle(
  bundle: string,
  output: string,
  change: (dir: string, manifest: Manifest) => void | Promise<void>,
): Promise<string> {
  const dir = await extractBundle(bundle);
  const manifest = readExtractedManifest(dir);
  await change(dir, manifest);
  const entries = ['manifest.json'];
  try {
    readFileSync(join(dir, 'manifest.sig'));
    entries.push('manifest.sig');
  } catch {
    // not signed
  }
  entries.push(...manifest.artifacts.map((a) => a.path));
  await execFileAsync('tar', ['--zstd', '-cf', output, '-C', dir, '--owner=0', '--group=0', '--numeric-owner', ...entries]);
  return output;
}
