/**
 * Safe extraction of zip and tar (plain, .tar.gz, .tgz) archives.
 *
 * Every entry name is checked before anything is written: absolute paths,
 * names that climb out with `..`, and symlinks whose target lies outside the
 * destination are rejected with an {@linkcode InputError} naming the entry.
 * Extraction goes into a temporary folder beside the destination, which is
 * renamed into place only when every entry was written and checked, so a
 * failed extraction leaves nothing half-written under the real name.
 *
 * The zip reader works over the central directory (stored and deflate
 * entries, ZIP64 for archives past 4 GiB such as COCO's train2017.zip) and
 * checks each entry's CRC-32. The tar reader streams ustar, GNU and pax
 * archives, gzip-compressed or not.
 *
 * Small writers ({@linkcode createZip}, {@linkcode createTar}) exist for tests
 * and examples; they write names exactly as given, hostile ones included.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import zlib from "node:zlib";
import { pipeline } from "node:stream/promises";
import { Transform } from "node:stream";
import { Buffer } from "node:buffer";
import { InputError } from "./errors.ts";
import { Progress, type ProgressOptions } from "./progress.ts";

/** Archive formats this module reads. */
export type ArchiveKind = "zip" | "tar" | "tar.gz";

/** Name of the marker file written into a finished extraction. */
export const EXTRACT_MARKER = ".extracted.json";

// ---------------------------------------------------------------- CRC-32

let crcTable: Uint32Array | undefined;

function crcTableGet(): Uint32Array {
  if (crcTable) return crcTable;
  crcTable = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    crcTable[n] = c >>> 0;
  }
  return crcTable;
}

// Node's zlib.crc32 (native, much faster on multi-GB archives) is recent;
// fall back to a table when the runtime lacks it.
const nativeCrc32 = (zlib as unknown as { crc32?: (d: Uint8Array, v?: number) => number }).crc32;

/**
 * CRC-32 (IEEE, as in zip and gzip) of `data`, continuing from `crc`.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const enc = new TextEncoder();
 * assertEquals(crc32(enc.encode("hello")), 0x3610a686);
 * assertEquals(crc32(enc.encode("lo"), crc32(enc.encode("hel"))), 0x3610a686);
 * ```
 */
export function crc32(data: Uint8Array, crc = 0): number {
  if (nativeCrc32) return nativeCrc32(data, crc) >>> 0;
  const t = crcTableGet();
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) c = t[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------- path safety

function malicious(entry: string, why: string, archive?: string): InputError {
  return new InputError(`unsafe archive entry ${JSON.stringify(entry)}: ${why}; nothing was extracted`, {
    file: archive,
  });
}

/**
 * Checks an archive entry name and returns it as a clean relative POSIX path
 * ("" for the root itself). Throws an {@linkcode InputError} naming the entry
 * when it is absolute, contains a NUL byte, or climbs out of the destination.
 * Backslashes count as separators too, since Windows tools write them.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals, throws } from "node:assert";
 * assertEquals(safeEntryPath("./a/b/../c.txt"), "a/c.txt");
 * throws(() => safeEntryPath("../evil.txt"), /"..\/evil.txt"/);
 * throws(() => safeEntryPath("/etc/passwd"), /absolute/);
 * ```
 */
export function safeEntryPath(name: string, archive?: string): string {
  if (name.includes("\0")) throw malicious(name, "name contains a NUL byte", archive);
  const slashed = name.replaceAll("\\", "/");
  if (slashed.startsWith("/") || /^[A-Za-z]:/.test(slashed)) throw malicious(name, "absolute path", archive);
  const norm = path.posix.normalize(slashed);
  if (norm === ".." || norm.startsWith("../")) throw malicious(name, "path escapes the target directory", archive);
  return norm === "." || norm === "./" ? "" : norm.replace(/\/+$/, "");
}

/**
 * Checks a symlink entry: `target` is resolved relative to the link's folder
 * and must stay inside the destination.
 */
export function safeLinkTarget(entry: string, target: string, archive?: string): void {
  const slashed = target.replaceAll("\\", "/");
  if (slashed === "" || slashed.includes("\0")) {
    throw malicious(entry, "symlink with an empty or invalid target", archive);
  }
  if (slashed.startsWith("/") || /^[A-Za-z]:/.test(slashed)) {
    throw malicious(entry, `symlink to absolute path ${JSON.stringify(target)}`, archive);
  }
  const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(entry), slashed));
  if (resolved === ".." || resolved.startsWith("../")) {
    throw malicious(entry, `symlink target ${JSON.stringify(target)} points outside the target directory`, archive);
  }
}

// ---------------------------------------------------------------- detection

/**
 * Guesses the archive kind from a file's first bytes (not its name), or
 * returns undefined when it is neither zip, tar nor gzip.
 */
export async function archiveKind(file: string): Promise<ArchiveKind | undefined> {
  const fh = await fs.promises.open(file, "r");
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await fh.read(head, 0, 512, 0);
    if (bytesRead >= 4 && head.readUInt32LE(0) === 0x04034b50) return "zip";
    if (bytesRead >= 4 && head.readUInt32LE(0) === 0x06054b50) return "zip"; // empty zip
    if (bytesRead >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "tar.gz";
    if (bytesRead >= 262 && head.toString("latin1", 257, 262) === "ustar") return "tar";
    if (bytesRead === 512 && tarChecksumOk(head)) return "tar"; // pre-POSIX tar
    return undefined;
  } finally {
    await fh.close();
  }
}

/** True when `name` ends like an archive this module can extract. */
export function looksLikeArchive(name: string): boolean {
  return /\.(zip|tar|tar\.gz|tgz)$/i.test(name);
}

// ---------------------------------------------------------------- extraction

/** Options for {@linkcode extractArchive}. */
export interface ExtractOptions {
  /** Extra fields stored in the marker file (e.g. the archive's sha256). */
  marker?: Record<string, unknown>;
  /** Progress bar options; `{ quiet: true }` silences it. */
  progress?: ProgressOptions;
}

/** What an extraction wrote. */
export interface ExtractResult {
  kind: ArchiveKind;
  dest: string;
  files: number;
  dirs: number;
  links: number;
  bytes: number;
}

interface Sink {
  root: string;
  archive: string;
  files: number;
  dirs: number;
  links: number;
  bytes: number;
  /** Deferred symlinks: created after every other entry, so no write goes through one. */
  symlinks: { rel: string; target: string }[];
  /** Regular files written, for hardlinks. */
  written: Set<string>;
}

/**
 * Extracts a zip, tar or tar.gz archive into `dest`, which must not exist yet.
 * The archive is unpacked into a temporary folder beside `dest` and renamed
 * into place at the end, with a {@linkcode EXTRACT_MARKER} file inside
 * recording what was extracted. Any unsafe entry aborts the whole extraction.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeFileSync(`${dir}/a.zip`, createZip([{ name: "data/hi.txt", data: "hi" }]));
 * await extractArchive(`${dir}/a.zip`, `${dir}/out`, { progress: { quiet: true } });
 * assertEquals(Deno.readTextFileSync(`${dir}/out/data/hi.txt`), "hi");
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export async function extractArchive(
  archive: string,
  dest: string,
  options: ExtractOptions = {},
): Promise<ExtractResult> {
  const kind = await archiveKind(archive);
  if (!kind) throw new InputError("not a zip, tar or tar.gz archive", { file: archive });
  if (fs.existsSync(dest)) throw new InputError(`extraction target ${dest} already exists; remove it to extract again`);
  const parent = path.dirname(path.resolve(dest));
  await fs.promises.mkdir(parent, { recursive: true });
  const tmp = path.join(
    parent,
    `.${path.basename(dest)}.extract-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}.tmp`,
  );
  await fs.promises.mkdir(tmp);
  const sink: Sink = {
    root: tmp,
    archive,
    files: 0,
    dirs: 0,
    links: 0,
    bytes: 0,
    symlinks: [],
    written: new Set(),
  };
  try {
    if (kind === "zip") await extractZip(archive, sink, options.progress);
    else await extractTar(archive, kind === "tar.gz", sink, options.progress);
    await finishSymlinks(sink);
    const result: ExtractResult = {
      kind,
      dest,
      files: sink.files,
      dirs: sink.dirs,
      links: sink.links,
      bytes: sink.bytes,
    };
    const marker = {
      archive: path.basename(archive),
      ...options.marker,
      kind,
      files: sink.files,
      dirs: sink.dirs,
      links: sink.links,
      bytes: sink.bytes,
      extracted_at: new Date().toISOString(),
    };
    await fs.promises.writeFile(path.join(tmp, EXTRACT_MARKER), JSON.stringify(marker, null, 2) + "\n");
    await fs.promises.rename(tmp, dest);
    return result;
  } catch (e) {
    await fs.promises.rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Reads the marker of a finished extraction, or undefined when there is none. */
export function readExtractMarker(dest: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dest, EXTRACT_MARKER), "utf8"));
  } catch {
    return undefined;
  }
}

async function ensureDir(sink: Sink, rel: string): Promise<void> {
  if (rel === "") return;
  const abs = path.join(sink.root, rel);
  const st = await fs.promises.lstat(abs).catch(() => undefined);
  if (st?.isDirectory()) return;
  if (st) throw new InputError(`entry ${JSON.stringify(rel)} is both a file and a folder`, { file: sink.archive });
  await fs.promises.mkdir(abs, { recursive: true });
  sink.dirs++;
}

async function openForEntry(sink: Sink, rel: string): Promise<string> {
  if (rel === "") throw new InputError("file entry with an empty name", { file: sink.archive });
  await ensureDir(sink, path.posix.dirname(rel) === "." ? "" : path.posix.dirname(rel));
  const abs = path.join(sink.root, rel);
  const st = await fs.promises.lstat(abs).catch(() => undefined);
  if (st?.isDirectory()) {
    throw new InputError(`entry ${JSON.stringify(rel)} is both a file and a folder`, { file: sink.archive });
  }
  return abs;
}

function addSymlink(sink: Sink, rel: string, target: string): void {
  if (rel === "") throw malicious(".", "symlink replacing the target directory", sink.archive);
  safeLinkTarget(rel, target, sink.archive);
  sink.symlinks.push({ rel, target });
}

async function finishSymlinks(sink: Sink): Promise<void> {
  for (const { rel, target } of sink.symlinks) {
    await ensureDir(sink, path.posix.dirname(rel) === "." ? "" : path.posix.dirname(rel));
    const abs = path.join(sink.root, rel);
    if (await fs.promises.lstat(abs).catch(() => undefined)) {
      throw new InputError(`symlink entry ${JSON.stringify(rel)} collides with another entry`, { file: sink.archive });
    }
    await fs.promises.symlink(target, abs);
    sink.links++;
  }
  // A chain of links can escape although each target looks local on its own
  // (a -> ".", b -> "a/.."), so check where every link really leads.
  const realRoot = await fs.promises.realpath(sink.root);
  for (const { rel, target } of sink.symlinks) {
    const real = await fs.promises.realpath(path.join(sink.root, rel)).catch(() => undefined);
    if (real !== undefined && real !== realRoot && !real.startsWith(realRoot + path.sep)) {
      throw malicious(
        rel,
        `symlink target ${JSON.stringify(target)} resolves outside the target directory`,
        sink.archive,
      );
    }
  }
}

// ---------------------------------------------------------------- zip

interface ZipEntry {
  name: string;
  method: number;
  flags: number;
  crc: number;
  csize: number;
  usize: number;
  offset: number;
  /** Unix mode from the external attributes, or 0. */
  mode: number;
  isDir: boolean;
}

async function readAt(fh: fs.promises.FileHandle, pos: number, len: number): Promise<Buffer> {
  const buf = Buffer.alloc(len);
  let done = 0;
  while (done < len) {
    const { bytesRead } = await fh.read(buf, done, len - done, pos + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done === len ? buf : buf.subarray(0, done);
}

function corrupt(archive: string, what: string): InputError {
  return new InputError(`corrupt zip: ${what}`, { file: archive });
}

/** Lists the entries of a zip file from its central directory. */
export async function listZip(archive: string): Promise<{ name: string; size: number; isDir: boolean }[]> {
  const fh = await fs.promises.open(archive, "r");
  try {
    return (await readCentralDirectory(fh, archive)).map((e) => ({ name: e.name, size: e.usize, isDir: e.isDir }));
  } finally {
    await fh.close();
  }
}

async function readCentralDirectory(fh: fs.promises.FileHandle, archive: string): Promise<ZipEntry[]> {
  const size = (await fh.stat()).size;
  // The end record is 22 bytes plus a comment of at most 65535 bytes.
  const tailLen = Math.min(size, 22 + 65535);
  const tail = await readAt(fh, size - tailLen, tailLen);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw corrupt(archive, "end of central directory not found");
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const locPos = size - tailLen + eocd - 20;
    const loc = locPos >= 0 ? await readAt(fh, locPos, 20) : Buffer.alloc(0);
    if (loc.length < 20 || loc.readUInt32LE(0) !== 0x07064b50) throw corrupt(archive, "ZIP64 locator not found");
    const z64Pos = Number(loc.readBigUInt64LE(8));
    const z64 = await readAt(fh, z64Pos, 56);
    if (z64.length < 56 || z64.readUInt32LE(0) !== 0x06064b50) throw corrupt(archive, "ZIP64 end record not found");
    count = Number(z64.readBigUInt64LE(32));
    cdSize = Number(z64.readBigUInt64LE(40));
    cdOffset = Number(z64.readBigUInt64LE(48));
  }
  if (cdOffset + cdSize > size) throw corrupt(archive, "central directory lies past the end of the file");
  const cd = await readAt(fh, cdOffset, cdSize);
  const entries: ZipEntry[] = [];
  let p = 0;
  const dec = new TextDecoder();
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== 0x02014b50) {
      throw corrupt(archive, `bad central directory entry #${i}`);
    }
    const madeBy = cd.readUInt16LE(p + 4) >> 8;
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    const crc = cd.readUInt32LE(p + 16);
    let csize = cd.readUInt32LE(p + 20);
    let usize = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    const external = cd.readUInt32LE(p + 38);
    let offset = cd.readUInt32LE(p + 42);
    const name = dec.decode(cd.subarray(p + 46, p + 46 + nameLen));
    // ZIP64 sizes live in extra field 0x0001, only for the fields that overflowed.
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = cd.readUInt16LE(x), len = cd.readUInt16LE(x + 2);
      if (id === 0x0001) {
        let q = x + 4;
        if (usize === 0xffffffff) (usize = Number(cd.readBigUInt64LE(q)), q += 8);
        if (csize === 0xffffffff) (csize = Number(cd.readBigUInt64LE(q)), q += 8);
        if (offset === 0xffffffff) offset = Number(cd.readBigUInt64LE(q));
      }
      x += 4 + len;
    }
    const mode = madeBy === 3 ? external >>> 16 : 0;
    const isDir = name.endsWith("/") || (external & 0x10) !== 0 || (mode & 0o170000) === 0o040000;
    entries.push({ name, method, flags, crc, csize, usize, offset, mode, isDir });
    p = xEnd + commentLen;
  }
  return entries;
}

/** Copies bytes through, keeping a CRC-32 and a count. */
class CrcCounter extends Transform {
  crc = 0;
  bytes = 0;
  override _transform(chunk: Buffer, _enc: string, cb: () => void): void {
    this.crc = crc32(chunk, this.crc);
    this.bytes += chunk.length;
    this.push(chunk);
    cb();
  }
}

// Entries below this size are read and inflated in memory (fast for the
// many small JPEGs of COCO); larger ones stream.
const SMALL_ENTRY = 8 << 20;

async function extractZip(archive: string, sink: Sink, progressOpts?: ProgressOptions): Promise<void> {
  const fh = await fs.promises.open(archive, "r");
  try {
    const entries = await readCentralDirectory(fh, archive);
    // Check every name first: a hostile entry fails before a byte is written.
    const rels = entries.map((e) => safeEntryPath(e.name, archive));
    const bar = new Progress(`extract ${path.basename(archive)}`, entries.length, { unit: "files", ...progressOpts });
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i], rel = rels[i];
      if (e.flags & 1) throw new InputError(`entry ${JSON.stringify(e.name)} is encrypted`, { file: archive });
      if ((e.mode & 0o170000) === 0o120000) {
        const target = (await readZipData(fh, archive, e)).toString("utf8");
        addSymlink(sink, rel, target);
      } else if (e.isDir) {
        await ensureDir(sink, rel);
      } else {
        const abs = await openForEntry(sink, rel);
        if (e.csize <= SMALL_ENTRY) {
          await fs.promises.writeFile(abs, await readZipData(fh, archive, e), { flag: "wx" });
        } else {
          await streamZipData(fh, archive, e, abs);
        }
        sink.files++;
        sink.bytes += e.usize;
        sink.written.add(rel);
      }
      bar.tick();
    }
    bar.done();
  } finally {
    await fh.close();
  }
}

async function dataStart(fh: fs.promises.FileHandle, archive: string, e: ZipEntry): Promise<number> {
  const lh = await readAt(fh, e.offset, 30);
  if (lh.length < 30 || lh.readUInt32LE(0) !== 0x04034b50) {
    throw corrupt(archive, `bad local header for ${JSON.stringify(e.name)}`);
  }
  return e.offset + 30 + lh.readUInt16LE(26) + lh.readUInt16LE(28);
}

function checkEntry(archive: string, e: ZipEntry, crc: number, bytes: number): void {
  if (bytes !== e.usize) {
    throw corrupt(archive, `entry ${JSON.stringify(e.name)} has ${bytes} bytes, expected ${e.usize}`);
  }
  if (crc !== e.crc) {
    throw corrupt(
      archive,
      `CRC-32 mismatch in entry ${JSON.stringify(e.name)} (expected ${e.crc.toString(16)}, got ${crc.toString(16)})`,
    );
  }
}

async function readZipData(fh: fs.promises.FileHandle, archive: string, e: ZipEntry): Promise<Buffer> {
  const start = await dataStart(fh, archive, e);
  const raw = await readAt(fh, start, e.csize);
  if (raw.length < e.csize) throw corrupt(archive, `entry ${JSON.stringify(e.name)} is truncated`);
  let out: Buffer;
  if (e.method === 0) out = raw;
  else if (e.method === 8) {
    try {
      out = zlib.inflateRawSync(raw);
    } catch (err) {
      throw corrupt(archive, `cannot inflate entry ${JSON.stringify(e.name)}: ${(err as Error).message}`);
    }
  } else throw unsupportedMethod(archive, e);
  checkEntry(archive, e, crc32(out), out.length);
  return out;
}

function unsupportedMethod(archive: string, e: ZipEntry): InputError {
  return new InputError(
    `entry ${
      JSON.stringify(e.name)
    } uses compression method ${e.method}; only stored (0) and deflate (8) are supported`,
    { file: archive },
  );
}

async function streamZipData(fh: fs.promises.FileHandle, archive: string, e: ZipEntry, abs: string): Promise<void> {
  if (e.method !== 0 && e.method !== 8) throw unsupportedMethod(archive, e);
  const start = await dataStart(fh, archive, e);
  const counter = new CrcCounter();
  const input = fs.createReadStream(archive, { start, end: start + e.csize - 1 });
  const out = fs.createWriteStream(abs, { flags: "wx" });
  try {
    if (e.method === 8) await pipeline(input, zlib.createInflateRaw(), counter, out);
    else await pipeline(input, counter, out);
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw corrupt(archive, `cannot extract entry ${JSON.stringify(e.name)}: ${(err as Error).message}`);
  }
  checkEntry(archive, e, counter.crc, counter.bytes);
}

// ---------------------------------------------------------------- tar

function tarChecksumOk(h: Uint8Array): boolean {
  const field = new TextDecoder().decode(h.subarray(148, 156)).replace(/[\0 ]+$/, "").trim();
  if (!/^[0-7]+$/.test(field)) return false;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
  return sum === parseInt(field, 8);
}

function tarString(h: Uint8Array, start: number, len: number): string {
  const s = h.subarray(start, start + len);
  const end = s.indexOf(0);
  return new TextDecoder().decode(end < 0 ? s : s.subarray(0, end));
}

function tarNumber(h: Uint8Array, start: number, len: number): number {
  // GNU base-256 for values that do not fit in octal (files over 8 GiB).
  if (h[start] & 0x80) {
    let n = h[start] & 0x7f;
    for (let i = 1; i < len; i++) n = n * 256 + h[start + i];
    return n;
  }
  const s = tarString(h, start, len).trim();
  return s === "" ? 0 : parseInt(s, 8);
}

/** Pulls exact byte counts out of a chunked stream. */
class ChunkReader {
  #it: AsyncIterator<Uint8Array>;
  #buf: Uint8Array = new Uint8Array(0);
  #pos = 0;
  consumed = 0;
  constructor(stream: AsyncIterable<Uint8Array>) {
    this.#it = stream[Symbol.asyncIterator]();
  }
  async #fill(): Promise<boolean> {
    const r = await this.#it.next();
    if (r.done) return false;
    this.#buf = r.value;
    this.#pos = 0;
    return true;
  }
  /** Reads exactly `n` bytes, or fewer at end of input. */
  async read(n: number): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    let got = 0;
    for await (const piece of this.pieces(n)) {
      out.set(piece, got);
      got += piece.length;
    }
    return got === n ? out : out.subarray(0, got);
  }
  /** Yields up to `n` bytes in pieces, without copying. */
  async *pieces(n: number): AsyncGenerator<Uint8Array> {
    while (n > 0) {
      if (this.#pos >= this.#buf.length && !(await this.#fill())) return;
      const take = Math.min(n, this.#buf.length - this.#pos);
      const piece = this.#buf.subarray(this.#pos, this.#pos + take);
      this.#pos += take;
      this.consumed += take;
      n -= take;
      yield piece;
    }
  }
  /** Closes the underlying iterator early. */
  async close(): Promise<void> {
    await this.#it.return?.();
  }
}

function parsePax(data: Uint8Array): Record<string, string> {
  // Records are "LEN key=value\n" where LEN counts bytes of the whole record.
  const out: Record<string, string> = {};
  let p = 0;
  const dec = new TextDecoder();
  while (p < data.length) {
    let sp = p;
    while (sp < data.length && data[sp] !== 0x20) sp++;
    const len = parseInt(dec.decode(data.subarray(p, sp)), 10);
    if (!(len > 0) || p + len > data.length) break;
    const rec = dec.decode(data.subarray(sp + 1, p + len - 1));
    const eq = rec.indexOf("=");
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    p += len;
  }
  return out;
}

async function extractTar(archive: string, gz: boolean, sink: Sink, progressOpts?: ProgressOptions): Promise<void> {
  const total = (await fs.promises.stat(archive)).size;
  const bar = new Progress(`extract ${path.basename(archive)}`, total, { bytes: true, ...progressOpts });
  const file = fs.createReadStream(archive);
  let stream: AsyncIterable<Uint8Array>;
  if (gz) {
    const gunzip = zlib.createGunzip();
    // pipe() does not forward read errors; do it so the reader sees them.
    file.on("error", (e) => gunzip.destroy(e));
    file.on("data", (c) => bar.tick(c.length));
    stream = file.pipe(gunzip);
  } else {
    stream = (async function* () {
      for await (const c of file) {
        bar.tick(c.length);
        yield c as Uint8Array;
      }
    })();
  }
  const r = new ChunkReader(stream);
  const fail = (what: string) => new InputError(`corrupt tar: ${what}`, { file: archive });
  let longName: string | undefined, longLink: string | undefined;
  let pax: Record<string, string> = {};
  try {
    while (true) {
      const h = await r.read(512);
      if (h.length === 0) break; // tolerate archives without the two zero blocks
      if (h.length < 512) throw fail("truncated header");
      if (h.every((b) => b === 0)) break;
      if (!tarChecksumOk(h)) throw fail(`bad header checksum at offset ${r.consumed - 512}`);
      const type = String.fromCharCode(h[156] || 0x30);
      let size = tarNumber(h, 124, 12);
      if (pax.size !== undefined) size = Number(pax.size);
      const pad = (512 - (size % 512)) % 512;
      const readMeta = async () => {
        const d = await r.read(size);
        if (d.length < size) throw fail("truncated entry");
        await r.read(pad);
        return d;
      };
      if (type === "L" || type === "K") {
        const s = tarString(await readMeta(), 0, size);
        if (type === "L") longName = s;
        else longLink = s;
        continue;
      }
      if (type === "x") {
        pax = { ...pax, ...parsePax(await readMeta()) };
        continue;
      }
      if (type === "g") {
        await readMeta(); // global pax headers carry nothing we use
        continue;
      }
      const magic = tarString(h, 257, 6);
      // Only POSIX ustar ("ustar\0") has a name prefix; old GNU tar ("ustar  ") keeps other fields there.
      const prefix = magic === "ustar" ? tarString(h, 345, 155) : "";
      const rawName = pax.path ?? longName ?? (prefix ? `${prefix}/${tarString(h, 0, 100)}` : tarString(h, 0, 100));
      const linkName = pax.linkpath ?? longLink ?? tarString(h, 157, 100);
      longName = longLink = undefined;
      pax = {};
      const rel = safeEntryPath(rawName, archive);
      if (type === "0" || type === "7") {
        const abs = await openForEntry(sink, rel);
        const fh = await fs.promises.open(abs, "wx");
        let got = 0;
        try {
          for await (const piece of r.pieces(size)) {
            await fh.write(piece);
            got += piece.length;
          }
        } finally {
          await fh.close();
        }
        if (got < size) throw fail(`entry ${JSON.stringify(rawName)} is truncated`);
        await r.read(pad);
        sink.files++;
        sink.bytes += size;
        sink.written.add(rel);
      } else if (type === "5") {
        await ensureDir(sink, rel);
        await readMeta();
      } else if (type === "2") {
        addSymlink(sink, rel, linkName);
        await readMeta();
      } else if (type === "1") {
        // A hard link names another entry of the archive; copy that file.
        const target = safeEntryPath(linkName, archive);
        if (!sink.written.has(target)) {
          throw new InputError(
            `hard link ${JSON.stringify(rawName)} points to ${JSON.stringify(linkName)}, which is not an earlier file`,
            {
              file: archive,
            },
          );
        }
        const abs = await openForEntry(sink, rel);
        await fs.promises.copyFile(path.join(sink.root, target), abs, fs.constants.COPYFILE_EXCL);
        sink.files++;
        sink.written.add(rel);
        await readMeta();
      } else if (type === "S" || type === "M") {
        throw new InputError(
          `entry ${JSON.stringify(rawName)} is a GNU sparse or multi-volume member, which is not supported`,
          {
            file: archive,
          },
        );
      } else {
        // Devices, FIFOs and unknown types: never created from a dataset archive.
        await readMeta();
      }
    }
    bar.done();
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw fail((e as Error).message);
  } finally {
    await r.close();
    file.destroy();
  }
}

// ---------------------------------------------------------------- writers

/** One entry for {@linkcode createZip} / {@linkcode createTar}. */
export interface ArchiveEntry {
  name: string;
  /** File contents; absent for folders and symlinks. */
  data?: string | Uint8Array;
  type?: "file" | "dir" | "symlink";
  /** Symlink target. */
  target?: string;
  /** Zip only: deflate instead of store (default true). */
  deflate?: boolean;
}

function bytesOf(d: string | Uint8Array | undefined): Uint8Array {
  return typeof d === "string" ? new TextEncoder().encode(d) : (d ?? new Uint8Array(0));
}

/** Options for {@linkcode createZip}. */
export interface CreateZipOptions {
  /** Write ZIP64 records (as tools do past 4 GiB or 65535 entries), to exercise that path on small data. */
  zip64?: boolean;
}

/**
 * Writes a small zip archive in memory. Names are written exactly as given,
 * so tests can build hostile archives.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const zip = createZip([{ name: "a.txt", data: "hello" }]);
 * assertEquals([zip[0], zip[1]], [0x50, 0x4b]); // "PK"
 * ```
 */
export function createZip(entries: ArchiveEntry[], options: CreateZipOptions = {}): Uint8Array {
  const enc = new TextEncoder();
  const z64 = options.zip64 === true;
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (const e of entries) {
    const type = e.type ?? "file";
    const name = enc.encode(type === "dir" && !e.name.endsWith("/") ? e.name + "/" : e.name);
    const raw = type === "symlink" ? enc.encode(e.target ?? "") : bytesOf(e.data);
    const method = type === "file" && e.deflate !== false ? 8 : 0;
    const body = method === 8 ? new Uint8Array(zlib.deflateRawSync(raw)) : raw;
    const crc = crc32(raw);
    const mode = type === "symlink" ? 0o120777 : type === "dir" ? 0o040755 : 0o100644;
    const u32 = (n: number) => (z64 ? 0xffffffff : n);
    // ZIP64 extra field: the real sizes (and, in the central directory, the offset).
    const extra = (withOffset: boolean) => {
      if (!z64) return new Uint8Array(0);
      const x = Buffer.alloc(withOffset ? 28 : 20);
      x.writeUInt16LE(0x0001, 0);
      x.writeUInt16LE(x.length - 4, 2);
      x.writeBigUInt64LE(BigInt(raw.length), 4);
      x.writeBigUInt64LE(BigInt(body.length), 12);
      if (withOffset) x.writeBigUInt64LE(BigInt(offset), 20);
      return x;
    };
    const lx = extra(false), cx = extra(true);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(z64 ? 45 : 20, 4);
    lh.writeUInt16LE(0x0800, 6); // UTF-8 names
    lh.writeUInt16LE(method, 8);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(u32(body.length), 18);
    lh.writeUInt32LE(u32(raw.length), 22);
    lh.writeUInt16LE(name.length, 26);
    lh.writeUInt16LE(lx.length, 28);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE((3 << 8) | 45, 4); // made by Unix, so the mode is read
    ch.writeUInt16LE(z64 ? 45 : 20, 6);
    ch.writeUInt16LE(0x0800, 8);
    ch.writeUInt16LE(method, 10);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(u32(body.length), 20);
    ch.writeUInt32LE(u32(raw.length), 24);
    ch.writeUInt16LE(name.length, 28);
    ch.writeUInt16LE(cx.length, 30);
    ch.writeUInt32LE(((mode << 16) | (type === "dir" ? 0x10 : 0)) >>> 0, 38);
    ch.writeUInt32LE(u32(offset), 42);
    locals.push(lh, name, lx, body);
    centrals.push(ch, name, cx);
    offset += lh.length + name.length + lx.length + body.length;
  }
  const cdSize = centrals.reduce((s, b) => s + b.length, 0);
  const tail: Uint8Array[] = [];
  if (z64) {
    const rec = Buffer.alloc(56);
    rec.writeUInt32LE(0x06064b50, 0);
    rec.writeBigUInt64LE(44n, 4);
    rec.writeUInt16LE(45, 12);
    rec.writeUInt16LE(45, 14);
    rec.writeBigUInt64LE(BigInt(entries.length), 24);
    rec.writeBigUInt64LE(BigInt(entries.length), 32);
    rec.writeBigUInt64LE(BigInt(cdSize), 40);
    rec.writeBigUInt64LE(BigInt(offset), 48);
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt(offset + cdSize), 8);
    loc.writeUInt32LE(1, 16);
    tail.push(rec, loc);
  }
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(z64 ? 0xffff : entries.length, 8);
  end.writeUInt16LE(z64 ? 0xffff : entries.length, 10);
  end.writeUInt32LE(z64 ? 0xffffffff : cdSize, 12);
  end.writeUInt32LE(z64 ? 0xffffffff : offset, 16);
  return new Uint8Array(Buffer.concat([...locals, ...centrals, ...tail, end]));
}

/**
 * Writes a small ustar archive in memory; pass it through `gzipSync` from
 * `node:zlib` for a .tar.gz. Names longer than 100 bytes use a pax header.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const tar = createTar([{ name: "a.txt", data: "hello" }]);
 * assertEquals(tar.length, 512 * 4); // header, data block, two end blocks
 * ```
 */
export function createTar(entries: ArchiveEntry[]): Uint8Array {
  const blocks: Uint8Array[] = [];
  const header = (name: string, size: number, type: string, link = "") => {
    const h = Buffer.alloc(512);
    h.write(name, 0, 100, "utf8");
    h.write(type === "5" ? "0000755\0" : "0000644\0", 100, "latin1");
    h.write("0000000\0", 108, "latin1");
    h.write("0000000\0", 116, "latin1");
    h.write(size.toString(8).padStart(11, "0") + "\0", 124, "latin1");
    h.write("00000000000\0", 136, "latin1");
    h.write("        ", 148, "latin1");
    h.write(type, 156, "latin1");
    h.write(link, 157, 100, "utf8");
    h.write("ustar\0" + "00", 257, "latin1");
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
    return h;
  };
  const push = (data: Uint8Array) => {
    blocks.push(data);
    if (data.length % 512) blocks.push(new Uint8Array(512 - (data.length % 512)));
  };
  for (const e of entries) {
    const type = e.type ?? "file";
    if (Buffer.byteLength(e.name) > 100) {
      // A pax record's length counts its own digits.
      const rec = (k: string, v: string) => {
        const body = ` ${k}=${v}\n`;
        const base = Buffer.byteLength(body);
        let n = base + String(base).length;
        if (String(n).length !== String(base).length) n = base + String(n).length;
        return `${n}${body}`;
      };
      const pax = new TextEncoder().encode(rec("path", e.name));
      blocks.push(header("PaxHeader", pax.length, "x"));
      push(pax);
    }
    const data = type === "file" ? bytesOf(e.data) : new Uint8Array(0);
    const t = type === "file" ? "0" : type === "dir" ? "5" : "2";
    blocks.push(header(e.name.slice(0, 100), data.length, t, e.target ?? ""));
    if (data.length) push(data);
  }
  blocks.push(new Uint8Array(1024));
  return new Uint8Array(Buffer.concat(blocks));
}
