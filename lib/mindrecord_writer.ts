/**
 * Writing a MindRecord set byte-identical to what MindSpore's FileWriter
 * writes (§3 of `mindrecord_format.md`): rows cut into row groups and placed
 * in blob and raw pages as ShardWriter does, then each shard's header (§2) and
 * its `.db` index (§6).
 *
 * Deterministic multi-shard rule (§3, BreakIntoShards): MindSpore splits each
 * `write_raw_data` batch of n rows into contiguous slices of ⌊n/k⌋ rows per
 * shard and hands the n mod k remainder rows to shards it picks at random. This
 * writer hands them out round-robin instead, continuing from where the previous
 * batch stopped: one batch of n rows gives the first n mod k shards one extra
 * row; one-row batches (what the ModelZoo SSD scripts do) put row i in shard
 * i mod k. Every outcome is one MindSpore itself could have produced.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { tempNameFor } from "./fs_atomic.ts";
import { compareUtf8, type FloatMode } from "./msgpack.ts";
import {
  blobFieldsOf,
  DEFAULT_HEADER_SIZE,
  DEFAULT_PAGE_SIZE,
  FIELD_TYPES,
  hasIntArray,
  isBlobField,
  type MindRecordRow,
  type MindRecordSchema,
  type SchemaEntry,
  shardFileNames,
} from "./mindrecord_format.ts";
import { type MindRecordHeader, type PageInfo, serializeHeader } from "./mindrecord_header.ts";
import { encodeBlob, encodeRaw } from "./mindrecord_pages.ts";
import { type DbRowFacts, writeIndexDb } from "./mindrecord_index.ts";

// ---------------------------------------------------------------------------------------------------------------------
// Writing

/** Options for {@linkcode MindRecordWriter}. */
export interface WriterOptions {
  schema: MindRecordSchema;
  /** Schema description (the SSD scripts use "ssd_json"). */
  desc?: string;
  /** Number of shard files (default 1). */
  shardCount?: number;
  /** Index fields in add_index order; default: every scalar field in sorted order (ShardWriter::SetShardHeader). */
  indexFields?: string[];
  headerSize?: number;
  pageSize?: number;
  /** "3.0" (default, compresses int arrays) or "2.0". */
  version?: "2.0" | "3.0";
  /** Float encoding of raw rows: "f64" (MindSpore 1.x, default) or "compact" (MindSpore 2.x). */
  floats?: FloatMode;
  /** Write the `.db` index beside each shard (default true). */
  writeDb?: boolean;
  /** Store string index values JSON-quoted, as MindSpore before r1.0 did (default false). */
  dbQuotedStrings?: boolean;
  /** Re-encode one shard of a bigger set: the full address list and this file's index in it (shardCount must be 1). */
  shardAddresses?: string[];
  shardId?: number;
  /** Header "statistics" (always null for FileWriter). */
  statistics?: unknown;
}

interface ShardState {
  file: string;
  tmp: string;
  fd: number;
  pages: PageInfo[];
  facts: DbRowFacts;
}

/**
 * Writes a MindRecord set as MindSpore's FileWriter: each {@linkcode write} call
 * is one `write_raw_data` call (§3: CutRowGroup, AppendBlobPage, NewBlobPage,
 * ShiftRawPage, WriteRawPage), {@linkcode commit} writes the headers and the
 * `.db` indexes. Files are written under temporary names and renamed into
 * place on commit, so a failed run never leaves half-written shards.
 */
export class MindRecordWriter {
  readonly files: string[];
  readonly entry: SchemaEntry;
  readonly #opts: Required<
    Omit<WriterOptions, "indexFields" | "shardAddresses" | "shardId" | "desc" | "statistics">
  >;
  readonly #indexFields: { field: string; schemaId: number }[];
  readonly #shards: ShardState[];
  readonly #compress: boolean;
  #compression = 0;
  #nextExtra = 0;
  #rows = 0;
  #done = false;
  #addresses: string[];
  #shardId: number | undefined;
  #statistics: unknown;

  constructor(file: string, options: WriterOptions) {
    const o = options;
    this.#opts = {
      schema: o.schema,
      shardCount: o.shardCount ?? 1,
      headerSize: o.headerSize ?? DEFAULT_HEADER_SIZE,
      pageSize: o.pageSize ?? DEFAULT_PAGE_SIZE,
      version: o.version ?? "3.0",
      floats: o.floats ?? "f64",
      writeDb: o.writeDb ?? true,
      dbQuotedStrings: o.dbQuotedStrings ?? false,
    };
    for (const [k, f] of Object.entries(o.schema)) {
      if (!FIELD_TYPES.has(f.type)) throw new TypeError(`Field "${k}" has unknown type ${f.type}`);
      if (f.shape && (f.type === "string" || f.type === "bytes")) {
        throw new TypeError(`Field "${k}" of type ${f.type} cannot have a shape`);
      }
    }
    this.files = shardFileNames(file, this.#opts.shardCount);
    this.entry = { desc: o.desc ?? "", blobFields: blobFieldsOf(o.schema), schema: o.schema };
    const scalars = Object.keys(o.schema).filter((k) => !isBlobField(o.schema[k])).sort(compareUtf8);
    this.#indexFields = (o.indexFields ?? scalars).map((f) => {
      if (!scalars.includes(f)) throw new TypeError(`Index field "${f}" is not a scalar field of the schema`);
      return { field: f, schemaId: 0 };
    });
    this.#compress = this.#opts.version === "3.0" && hasIntArray(o.schema);
    if (o.shardAddresses && this.files.length !== 1) throw new TypeError("shardAddresses needs shardCount 1");
    this.#addresses = o.shardAddresses ?? this.files.map((f) => path.basename(f));
    this.#shardId = o.shardId;
    this.#statistics = o.statistics ?? null;
    this.#shards = [];
    try {
      for (const f of this.files) {
        fs.mkdirSync(path.dirname(f), { recursive: true });
        const tmp = tempNameFor(f);
        this.#shards.push({
          file: f,
          tmp,
          fd: fs.openSync(tmp, "w+"),
          pages: [],
          facts: { rawLen: [], blobLen: [], index: [] },
        });
      }
    } catch (e) {
      this.abort();
      throw e;
    }
  }

  /** Rows written so far. */
  get rowCount(): number {
    return this.#rows;
  }

  /** One `write_raw_data` call with these rows. */
  write(rows: MindRecordRow[]): void {
    if (this.#done) throw new Error("MindRecordWriter is closed");
    if (rows.length === 0) return;
    try {
      this.#write(rows);
    } catch (e) {
      this.abort();
      throw e;
    }
  }

  #write(rows: MindRecordRow[]): void {
    const P = this.#opts.pageSize;
    const blobs: Uint8Array[] = [], raws: Uint8Array[] = [];
    for (const r of rows) {
      const { blob, saved } = encodeBlob(r, this.entry, this.#compress);
      this.#compression += saved;
      blobs.push(blob);
      raws.push(encodeRaw(r, this.entry, this.#opts.floats));
    }
    const blobSize = blobs.map((b) => 8 + b.length), rawSize = raws.map((b) => 8 + b.length);
    // SetRawDataSize / SetBlobDataSize: every row must fit one page.
    for (let i = 0; i < rows.length; i++) {
      if (blobSize[i] > P || rawSize[i] > P) {
        throw new RangeError(
          `Row of ${Math.max(blobSize[i], rawSize[i])} bytes does not fit a page of ${P} bytes; raise the page size`,
        );
      }
    }
    // BreakIntoShards with the deterministic remainder rule (module doc).
    const k = this.#shards.length, n = rows.length;
    const per = Math.floor(n / k), extra = n % k;
    const gets = new Set<number>();
    for (let i = 0; i < extra; i++) gets.add((this.#nextExtra + i) % k);
    this.#nextExtra = (this.#nextExtra + extra) % k;
    let start = 0;
    for (let s = 0; s < k; s++) {
      const end = start + per + (gets.has(s) ? 1 : 0);
      this.#writeByShard(this.#shards[s], start, end, blobs, raws, blobSize, rawSize, rows);
      start = end;
    }
    this.#rows += n;
  }

  #writeByShard(
    sh: ShardState,
    start: number,
    end: number,
    blobs: Uint8Array[],
    raws: Uint8Array[],
    blobSize: number[],
    rawSize: number[],
    rows: MindRecordRow[],
  ): void {
    if (start === end) return;
    const P = this.#opts.pageSize, H = this.#opts.headerSize;
    const lastOf = (t: PageInfo["pageType"]) => sh.pages.findLast((p) => p.pageType === t) ?? null;
    let lastRaw = lastOf("RAW_DATA");
    const lastBlob = lastOf("BLOB_DATA");
    const sum = (a: number[], s: number, e: number) => a.slice(s, e).reduce((x, y) => x + y, 0);
    const writeAt = (chunks: Uint8Array[], pos: number) => {
      for (const c of chunks) {
        fs.writeSync(sh.fd, c, 0, c.length, pos);
        pos += c.length;
      }
    };
    const lenPrefixed = (data: Uint8Array[], s: number, e: number) => {
      const out: Uint8Array[] = [];
      for (let i = s; i < e; i++) {
        const len = new Uint8Array(8);
        new DataView(len.buffer).setBigUint64(0, BigInt(data[i].length), true);
        out.push(len, data[i]);
      }
      return out;
    };
    // CutRowGroup: group 0 appends to the last blob page; a new group starts when a page would overflow.
    let nBlob = lastBlob ? lastBlob.pageSize : 0;
    let nRaw = lastRaw ? lastRaw.pageSize - lastRaw.rowGroupIds[lastRaw.rowGroupIds.length - 1][1] : 0;
    const groups: [number, number][] = [];
    let ps = start;
    for (let i = start; i < end; i++) {
      if (nBlob === 0 || nBlob + blobSize[i] > P || nRaw + rawSize[i] > P) {
        groups.push([ps, i]);
        ps = i;
        nBlob = blobSize[i];
        nRaw = rawSize[i];
      } else {
        nBlob += blobSize[i];
        nRaw += rawSize[i];
      }
    }
    groups.push([ps, end]);
    // AppendBlobPage.
    const [a0, a1] = groups[0];
    if (a0 !== a1) {
      writeAt(lenPrefixed(blobs, a0, a1), H + P * lastBlob!.pageId + lastBlob!.pageSize);
      lastBlob!.pageSize += sum(blobSize, a0, a1);
      lastBlob!.endRowId += a1 - a0;
    }
    // NewBlobPage.
    let pageId = sh.pages.length - 1;
    let typeId = lastBlob ? lastBlob.pageTypeId : -1;
    let cur = lastBlob ? lastBlob.endRowId : 0;
    for (let g = 1; g < groups.length; g++) {
      const [s, e] = groups[g];
      writeAt(lenPrefixed(blobs, s, e), H + P * (pageId + 1));
      sh.pages.push({
        pageId: ++pageId,
        shardId: 0,
        pageType: "BLOB_DATA",
        pageTypeId: ++typeId,
        startRowId: cur,
        endRowId: cur + e - s,
        rowGroupIds: [],
        pageSize: sum(blobSize, s, e),
      });
      cur += e - s;
    }
    // ShiftRawPage: move the last row group to a new raw page when the appended rows would not fit.
    if (a0 !== a1 && sum(rawSize, a0, a1) + (lastRaw ? lastRaw.pageSize : 0) > P) {
      const lr = lastRaw!;
      pageId = sh.pages.length - 1;
      const off = lr.rowGroupIds[lr.rowGroupIds.length - 1][1];
      const shift = lr.pageSize - off;
      const buf = new Uint8Array(shift);
      fs.readSync(sh.fd, buf, 0, shift, H + P * lr.pageId + off);
      writeAt([buf], H + P * (pageId + 1));
      lr.pageSize = off;
      lr.rowGroupIds.pop();
      if (lr.rowGroupIds.length === 0) {
        throw new Error("MindRecord writer: cannot shift the only row group of a raw page");
      }
      const gid = lr.rowGroupIds[lr.rowGroupIds.length - 1][0] + 1;
      const np: PageInfo = {
        pageId: pageId + 1,
        shardId: 0,
        pageType: "RAW_DATA",
        pageTypeId: lr.pageId + 1,
        startRowId: 0,
        endRowId: 0,
        rowGroupIds: [[gid, 0]],
        pageSize: shift,
      };
      sh.pages.push(np);
      lastRaw = np;
    }
    // WriteRawPage / EmptyRawPage / AppendRawPage.
    let lastGroupId = lastRaw ? lastRaw.rowGroupIds[lastRaw.rowGroupIds.length - 1][0] : -1;
    const emptyRawPage = (prev: PageInfo | null): PageInfo => {
      const p: PageInfo = {
        pageId: sh.pages.length,
        shardId: 0,
        pageType: "RAW_DATA",
        pageTypeId: prev ? prev.pageId + 1 : 0,
        startRowId: 0,
        endRowId: 0,
        rowGroupIds: [],
        pageSize: 0,
      };
      sh.pages.push(p);
      return p;
    };
    for (let g = 0; g < groups.length; g++) {
      const [s, e] = groups[g];
      if (s === e) continue;
      const rs = sum(rawSize, s, e);
      if (!lastRaw) lastRaw = emptyRawPage(null);
      else if (lastRaw.pageSize + rs > P) lastRaw = emptyRawPage(lastRaw);
      const nBytes = lastRaw.pageSize;
      writeAt(lenPrefixed(raws, s, e), H + P * lastRaw.pageId + nBytes);
      if (g > 0) lastRaw.rowGroupIds.push([++lastGroupId, nBytes]);
      lastRaw.pageSize = nBytes + rs;
    }
    // Facts for the .db, in shard-local row order.
    for (let i = start; i < end; i++) {
      sh.facts.rawLen.push(raws[i].length);
      sh.facts.blobLen.push(blobs[i].length);
      sh.facts.index.push(this.#indexFields.map((f) => {
        const v = rows[i][f.field];
        return typeof v === "number" || typeof v === "bigint" || typeof v === "string" ? v : String(v);
      }));
    }
  }

  /** The header of shard `k` as it stands. */
  header(k: number): MindRecordHeader {
    const sh = this.#shards[k];
    const id = this.#shardId ?? k;
    return {
      headerSize: this.#opts.headerSize,
      pageSize: this.#opts.pageSize,
      version: this.#opts.version,
      compressionSize: this.#opts.version === "2.0" ? undefined : Math.max(0, this.#compression),
      indexFields: this.#indexFields.length > 0 ? this.#indexFields : null,
      pages: sh.pages.map((p) => ({
        ...p,
        shardId: id,
        rowGroupIds: p.rowGroupIds.map((g) => [...g] as [number, number]),
      })),
      schemas: [this.entry],
      shardAddresses: this.#addresses,
      shardId: id,
      statistics: this.#statistics,
    };
  }

  /** Writes headers and indexes, then renames every file into place. */
  commit(): void {
    if (this.#done) throw new Error("MindRecordWriter is closed");
    const dbTmps: string[] = [];
    try {
      for (let k = 0; k < this.#shards.length; k++) {
        const sh = this.#shards[k];
        const h = this.header(k);
        const text = new TextEncoder().encode(serializeHeader(h));
        if (text.length + 8 > h.headerSize) {
          throw new RangeError(`Shard header of ${text.length} bytes does not fit header_size ${h.headerSize}`);
        }
        const len = new Uint8Array(8);
        new DataView(len.buffer).setBigUint64(0, BigInt(text.length), true);
        fs.writeSync(sh.fd, len, 0, 8, 0);
        fs.writeSync(sh.fd, text, 0, text.length, 8);
        fs.closeSync(sh.fd);
        sh.fd = -1;
        if (this.#opts.writeDb) {
          const dbTmp = tempNameFor(sh.file + ".db");
          dbTmps.push(dbTmp);
          writeIndexDb(dbTmp, path.basename(sh.file), h, sh.facts, this.#opts.dbQuotedStrings);
        }
      }
      for (let k = 0; k < this.#shards.length; k++) {
        const sh = this.#shards[k];
        fs.renameSync(sh.tmp, sh.file);
        if (this.#opts.writeDb) fs.renameSync(dbTmps[k], sh.file + ".db");
        else fs.rmSync(sh.file + ".db", { force: true });
      }
      this.#done = true;
    } catch (e) {
      for (const t of dbTmps) fs.rmSync(t, { force: true });
      this.abort();
      throw e;
    }
  }

  /** Closes and deletes every temporary file; nothing under the final names is touched. */
  abort(): void {
    this.#done = true;
    for (const sh of this.#shards) {
      if (sh.fd >= 0) {
        try {
          fs.closeSync(sh.fd);
        } catch { /* already closed */ }
        sh.fd = -1;
      }
      fs.rmSync(sh.tmp, { force: true });
    }
  }
}

/**
 * Writes `rows` as a MindRecord set in batches of `batchSize` rows per
 * `write_raw_data` call (default: all rows in one call). Returns the files.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { openMindRecord } from "./mindrecord_reader.ts";
 * const dir = Deno.makeTempDirSync();
 * const files = writeMindRecord(`${dir}/t.mindrecord`, [{ id: 1 }, { id: 2 }], { schema: { id: { type: "int32" } } });
 * assertEquals([...openMindRecord(files[0]).rows()].map((r) => r.id), [1, 2]);
 * ```
 */
export function writeMindRecord(
  file: string,
  rows: Iterable<MindRecordRow>,
  options: WriterOptions & { batchSize?: number },
): string[] {
  const w = new MindRecordWriter(file, options);
  const bs = options.batchSize ?? Infinity;
  let batch: MindRecordRow[] = [];
  try {
    for (const r of rows) {
      batch.push(r);
      if (batch.length >= bs) {
        w.write(batch);
        batch = [];
      }
    }
    w.write(batch);
    w.commit();
  } catch (e) {
    w.abort();
    throw e;
  }
  return w.files;
}
