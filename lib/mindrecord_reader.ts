/**
 * Reading a MindRecord set (§3, §7 of `mindrecord_format.md`):
 * {@linkcode openMindRecord} opens every shard named in a header's
 * shard_addresses and walks each shard's raw pages and the blob pages they
 * point at, in ROW_ID order, decoding each row (or leaving its big blob fields
 * on disk). Also a human-readable summary of a set ({@linkcode summarizeMindRecord}).
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { InputError } from "./errors.ts";
import { compareUtf8, decodeMsgpack, type DecodeStats, type FloatMode, type MsgValue } from "./msgpack.ts";
import { hasIntArray, isBlobField, type MindRecordRow, type SchemaEntry } from "./mindrecord_format.ts";
import { canonicalJson, type MindRecordHeader, type PageInfo, readHeader, schemaToJson } from "./mindrecord_header.ts";
import { decodeBlob, decodeColumns, rawValueToField, readBigU64 } from "./mindrecord_pages.ts";
import { readIndexDb } from "./mindrecord_index.ts";

// ---------------------------------------------------------------------------------------------------------------------
// Reading

/** Options for {@linkcode openMindRecord}. */
export interface OpenOptions {
  /** Read only the given file even when its header lists other shards. */
  singleShard?: boolean;
}

/** One shard of an open set. */
export interface ShardInfo {
  file: string;
  header: MindRecordHeader;
  rows: number;
}

/** An open MindRecord set: headers of every shard, and rows on demand. */
export interface MindRecordSet {
  /** Shard files in shard_addresses order. */
  shards: ShardInfo[];
  /** The schema (every shard carries the same one). */
  schema: SchemaEntry;
  version: "2.0" | "3.0";
  /** Total rows of all shards. */
  numRows: number;
  /** Floats seen while reading rows so far (for re-encoding byte-exact). */
  floatStats: DecodeStats;
  /** Rows of one shard in ROW_ID order. */
  shardRows(shard: number): Generator<MindRecordRow>;
  /** Rows of every shard: shard order, then row order (§7). */
  rows(): Generator<MindRecordRow>;
  /**
   * Rows of every shard with the blob fields in `lazy` left on disk: each row's `refs` says where they are.
   * Memory does not grow with the bytes of those fields.
   */
  lazyRows(lazy: ReadonlySet<string>): Generator<MindRecordRow & { refs?: Record<string, FieldRef> }>;
}

function rowCount(h: MindRecordHeader): number {
  return h.pages.filter((p) => p.pageType === "BLOB_DATA").reduce((a, p) => a + p.endRowId - p.startRowId, 0);
}

/**
 * Opens a MindRecord set from any of its shard files (usually shard 0): the
 * header's shard_addresses name the other files, looked up beside it (§7).
 * Throws {@linkcode InputError} naming the file for anything malformed.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const set = openMindRecord("tests/fixtures/mindrecord/twobytes.mindrecord");
 * assertEquals([set.version, set.numRows, set.schema.blobFields], ["2.0", 5, ["img_data", "label_data"]]);
 * ```
 */
export function openMindRecord(file: string, options: OpenOptions = {}): MindRecordSet {
  const first = readHeader(file);
  const dir = path.dirname(file);
  const files = options.singleShard ? [file] : first.shardAddresses.map((a) => path.join(dir, path.basename(a)));
  const shards: ShardInfo[] = files.map((f, i) => {
    if (options.singleShard || path.resolve(f) === path.resolve(file)) {
      return { file: f, header: first, rows: rowCount(first) };
    }
    if (!fs.existsSync(f)) {
      throw new InputError(
        `shard ${i} of ${files.length} is missing (listed in shard_addresses of ${file}); ` +
          `copy every shard, or read this file alone`,
        { file: f },
      );
    }
    const h = readHeader(f);
    return { file: f, header: h, rows: rowCount(h) };
  });
  for (const s of shards) {
    const h = s.header;
    const same = h.headerSize === first.headerSize && h.pageSize === first.pageSize && h.version === first.version &&
      canonicalJson(h.schemas.map(schemaToJson)) === canonicalJson(first.schemas.map(schemaToJson));
    if (!same) {
      throw new InputError(`shard header disagrees with ${file} (sizes, version or schema)`, {
        file: s.file,
        where: "header",
      });
    }
  }
  const schema = first.schemas[0];
  const compressed = first.version >= "3.0" && hasIntArray(schema.schema);
  const floatStats: DecodeStats = { f32: 0, f64Exact32: 0 };
  function* shardRows(k: number): Generator<MindRecordRow> {
    const { file: f, header: h } = shards[k];
    yield* readShardRows(f, h, schema, compressed, floatStats);
  }
  return {
    shards,
    schema,
    version: first.version,
    numRows: shards.reduce((a, s) => a + s.rows, 0),
    floatStats,
    shardRows,
    *rows() {
      for (let k = 0; k < shards.length; k++) yield* shardRows(k);
    },
    *lazyRows(lazy) {
      for (const { file: f, header: h } of shards) yield* readShardRows(f, h, schema, compressed, floatStats, lazy);
    },
  };
}

/** A shard's row groups in ROW_ID order: each raw page's groups point at blob pages by page_type_id (§3). */
function rowGroups(file: string, h: MindRecordHeader): { raw: PageInfo; blob: PageInfo; offset: number }[] {
  const blobByType = new Map<number, PageInfo>();
  for (const p of h.pages) if (p.pageType === "BLOB_DATA") blobByType.set(p.pageTypeId, p);
  const groups: { raw: PageInfo; blob: PageInfo; offset: number }[] = [];
  const rawPages = h.pages.filter((p) => p.pageType === "RAW_DATA").sort((a, b) => a.pageId - b.pageId);
  for (const raw of rawPages) {
    // An empty raw page serializes its empty group list as [{"id":0,"offset":0}] (shard_page.cc): it holds no rows.
    if (raw.pageSize === 0) continue;
    for (const [gid, offset] of raw.rowGroupIds) {
      const blob = blobByType.get(gid);
      if (!blob) {
        throw new InputError(`raw page ${raw.pageId} refers to missing blob row group ${gid}`, {
          file,
          where: "header",
        });
      }
      groups.push({ raw, blob, offset });
    }
  }
  groups.sort((a, b) => a.blob.startRowId - b.blob.startRowId);
  const expected = rowCount(h);
  const covered = new Set(groups.map((g) => g.blob.pageTypeId));
  if (
    covered.size !== groups.length || groups.reduce((a, g) => a + g.blob.endRowId - g.blob.startRowId, 0) !== expected
  ) {
    throw new InputError(`raw pages do not cover every blob page exactly once`, { file, where: "header" });
  }
  return groups;
}

/** Where a field left on disk lives: `length` bytes at byte `offset` of `file`. */
export interface FieldRef {
  file: string;
  offset: number;
  length: number;
}

/**
 * Rows of one shard. Fields named in `lazy` (blob fields) are not read: the row
 * gets a {@linkcode FieldRef} for each in `refs`, and the blob pages are read
 * by the few bytes each row needs instead of whole, so memory does not grow
 * with the data (§3, §5).
 */
function* readShardRows(
  file: string,
  h: MindRecordHeader,
  entry: SchemaEntry,
  compressed: boolean,
  stats: DecodeStats,
  lazy?: ReadonlySet<string>,
): Generator<MindRecordRow & { refs?: Record<string, FieldRef> }> {
  const groups = rowGroups(file, h);
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (e) {
    throw new InputError(`cannot read MindRecord file (${(e as Error).message})`, { file, cause: e });
  }
  const pageStart = (p: PageInfo) => h.headerSize + h.pageSize * p.pageId;
  const cache = new Map<number, Uint8Array>();
  const page = (p: PageInfo): Uint8Array => {
    let b = cache.get(p.pageId);
    if (!b) {
      b = new Uint8Array(p.pageSize);
      let got: number;
      try {
        got = fs.readSync(fd, b, 0, b.length, pageStart(p));
      } catch (e) {
        throw new InputError(`cannot read page ${p.pageId} (${(e as Error).message})`, { file, cause: e });
      }
      if (got !== b.length) throw new InputError(`page ${p.pageId} is truncated`, { file, where: `page ${p.pageId}` });
      if (cache.size >= 2) cache.clear();
      cache.set(p.pageId, b);
    }
    return b;
  };
  // Lazy mode: `n` bytes at `off` of a blob page, read on their own.
  const slice = (p: PageInfo, off: number, n: number, where: string): Uint8Array => {
    if (off + n > p.pageSize) {
      throw new InputError(`blob data runs past the end of page ${p.pageId}`, { file, where });
    }
    const b = new Uint8Array(n);
    const got = fs.readSync(fd, b, 0, n, pageStart(p) + off);
    if (got !== n) throw new InputError(`page ${p.pageId} is truncated`, { file, where });
    return b;
  };
  try {
    for (const g of groups) {
      let rawPos = g.offset, blobPos = 0;
      for (let r = g.blob.startRowId; r < g.blob.endRowId; r++) {
        const where = `row ${r} (raw page ${g.raw.pageId}, blob page ${g.blob.pageId})`;
        const fail = (msg: string, cause?: unknown): never => {
          throw new InputError(msg, { file, where, cause });
        };
        const rawBytes = page(g.raw);
        if (rawPos + 8 > rawBytes.length) fail("raw row length runs past the end of its page");
        const rl = readBigU64(rawBytes, rawPos, true);
        if (rawPos + 8 + rl > rawBytes.length) fail(`raw row of ${rl} bytes runs past the end of its page`);
        let rawVal: MsgValue;
        try {
          rawVal = decodeMsgpack(rawBytes.subarray(rawPos + 8, rawPos + 8 + rl), stats);
        } catch (e) {
          fail(`raw row is not valid msgpack: ${(e as Error).message}`, e);
        }
        rawPos += 8 + rl;
        if (!(rawVal! instanceof Map)) fail("raw row is not a msgpack map");
        let row: MindRecordRow & { refs?: Record<string, FieldRef> };
        if (!lazy) {
          const blobBytes = page(g.blob);
          if (blobPos + 8 > blobBytes.length) fail("blob row length runs past the end of its page");
          const bl = readBigU64(blobBytes, blobPos, true);
          if (blobPos + 8 + bl > blobBytes.length) fail(`blob row of ${bl} bytes runs past the end of its page`);
          try {
            row = decodeBlob(blobBytes.subarray(blobPos + 8, blobPos + 8 + bl), entry, compressed);
          } catch (e) {
            if (e instanceof InputError) throw e;
            fail(`bad blob: ${(e as Error).message}`, e);
          }
          blobPos += 8 + bl;
        } else {
          const bl = readBigU64(slice(g.blob, blobPos, 8, where), 0, true);
          if (blobPos + 8 + bl > g.blob.pageSize) fail(`blob row of ${bl} bytes runs past the end of its page`);
          const cols: (Uint8Array | null)[] = [];
          const refs: Record<string, FieldRef> = {};
          const one = entry.blobFields.length === 1;
          let p = blobPos + 8;
          for (const f of entry.blobFields) {
            let n = bl;
            if (!one) {
              if (p + 8 > blobPos + 8 + bl) fail(`blob truncated before field "${f}"`);
              n = readBigU64(slice(g.blob, p, 8, where), 0, false);
              p += 8;
              if (p + n > blobPos + 8 + bl) fail(`blob field "${f}" claims ${n} bytes, past the end of the blob`);
            }
            if (lazy.has(f)) {
              refs[f] = { file, offset: pageStart(g.blob) + p, length: n };
              cols.push(null);
            } else cols.push(slice(g.blob, p, n, where));
            p += n;
          }
          if (!one && p !== blobPos + 8 + bl) fail(`${blobPos + 8 + bl - p} trailing bytes after the last blob field`);
          try {
            row = decodeColumns(cols, entry, compressed);
          } catch (e) {
            fail(`bad blob: ${(e as Error).message}`, e);
          }
          row!.refs = refs;
          blobPos += 8 + bl;
        }
        for (const [k, v] of rawVal! as Map<string, MsgValue>) {
          const spec = entry.schema[k];
          if (!spec || isBlobField(spec)) continue; // e.g. the dummy {"id":0} of all-blob schemas.
          row![k] = rawValueToField(v, spec);
        }
        yield row!;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** The float mode a set's raw rows were written with, judged from the floats read so far (f64 when unknown). */
export function detectFloatMode(stats: DecodeStats): FloatMode {
  return stats.f32 > 0 && stats.f64Exact32 === 0 ? "compact" : "f64";
}

// ---------------------------------------------------------------------------------------------------------------------
// Summary (deno task records)

/**
 * A human-readable summary of a set: version, schema, index fields, shard files
 * with their row counts (and whether each `.db` is present), and the total.
 */
export function summarizeMindRecord(file: string, options: OpenOptions = {}): string {
  const set = openMindRecord(file, options);
  const h = set.shards[0].header;
  const lines = [
    `MindRecord ${file}`,
    `  version       ${set.version}${
      h.compressionSize !== undefined ? ` (compression_size ${h.compressionSize})` : ""
    }`,
    `  header/page   ${h.headerSize} / ${h.pageSize} bytes`,
    `  schema        ${JSON.stringify(set.schema.desc).slice(0, 100)}${set.schema.desc.length > 98 ? "..." : ""}`,
  ];
  for (const [k, f] of Object.entries(set.schema.schema).sort(([a], [b]) => compareUtf8(a, b))) {
    lines.push(
      `    ${k.padEnd(20)} ${f.type}${f.shape ? ` [${f.shape.join(",")}]` : ""}${isBlobField(f) ? "  (blob)" : ""}`,
    );
  }
  lines.push(`  index fields  ${h.indexFields ? h.indexFields.map((f) => f.field).join(", ") : "none"}`);
  lines.push(`  shards        ${set.shards.length}`);
  for (const s of set.shards) {
    const pages = s.header.pages.length;
    let db = "no .db";
    if (fs.existsSync(s.file + ".db")) {
      try {
        const { shardName, rows } = readIndexDb(s.file + ".db");
        const okName = shardName === path.basename(s.file);
        db = rows.length === s.rows && okName
          ? ".db ok"
          : `.db MISMATCH (${rows.length} rows${okName ? "" : `, SHARD_NAME ${JSON.stringify(shardName)}`})`;
      } catch (e) {
        db = `.db unreadable (${(e as Error).message})`;
      }
    }
    lines.push(`    ${path.basename(s.file).padEnd(24)} ${String(s.rows).padStart(8)} rows  ${pages} pages  ${db}`);
  }
  lines.push(`  rows          ${set.numRows}`);
  return lines.join("\n");
}
