/**
 * The `.db` SQLite index MindSpore writes beside each shard (§6 of
 * `mindrecord_format.md`, shard_index_generator.cc), through `node:sqlite`:
 * the exact CREATE TABLE, writing it (for the writer), reading it, and checking
 * it against the pages of its shard ({@linkcode verifyIndexDb}). MindSpore's
 * MindDataset will not read a shard without it.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { InputError } from "./errors.ts";
import type { MindRecordHeader, PageInfo } from "./mindrecord_header.ts";
import { readBigU64 } from "./mindrecord_pages.ts";

// ---------------------------------------------------------------------------------------------------------------------
// .db index (§6)

const SQL_TYPE: Record<string, string> = {
  int32: "INTEGER",
  int64: "INTEGER",
  float32: "NUMERIC",
  float64: "NUMERIC",
  string: "TEXT",
};

function dbFieldName(field: string, schemaId: number): string {
  // ShardIndexGenerator::GenerateFieldName: '-' and '.' become '_'; only [0-9A-Za-z_] allowed.
  const n = field.replace(/[-.]/g, "_");
  if (!/^[0-9A-Za-z_]+$/.test(n)) {
    throw new TypeError(`Index field name must be composed of 0-9, a-z, A-Z or _: ${field}`);
  }
  return `${n}_${schemaId}`;
}

/** The exact CREATE TABLE INDEXES statement (ShardIndexGenerator::CreateDatabase). */
export function createIndexesSql(h: MindRecordHeader): string {
  let sql = "CREATE TABLE INDEXES(" +
    "  ROW_ID               INT  NOT NULL, PAGE_ID_RAW          INT  NOT NULL" +
    ", PAGE_OFFSET_RAW      INT  NOT NULL, PAGE_OFFSET_RAW_END  INT  NOT NULL" +
    ", ROW_GROUP_ID         INT  NOT NULL, PAGE_ID_BLOB         INT  NOT NULL" +
    ", PAGE_OFFSET_BLOB     INT  NOT NULL, PAGE_OFFSET_BLOB_END INT  NOT NULL";
  const fields = h.indexFields ?? [];
  fields.forEach((f, i) => {
    const t = SQL_TYPE[h.schemas[f.schemaId].schema[f.field]?.type ?? ""] ?? "TEXT";
    sql += `,INC_${i} INT, ${dbFieldName(f.field, f.schemaId)} ${t}`;
  });
  sql += ", PRIMARY KEY(ROW_ID";
  for (let i = 0; i < fields.length; i++) sql += `,INC_${i}`;
  return sql + "));";
}

/** Per-row facts the .db needs, in shard-local row order. */
export interface DbRowFacts {
  rawLen: number[];
  blobLen: number[];
  index: (number | bigint | string)[][];
}

/** Writes a shard's `.db` (for the writer: not in mod.ts). */
export function writeIndexDb(
  dbFile: string,
  shardName: string,
  h: MindRecordHeader,
  facts: DbRowFacts,
  quotedStrings: boolean,
): void {
  const db = new DatabaseSync(dbFile);
  try {
    // Same statements in the same order as ShardIndexGenerator (CreateDatabase, CreateShardNameTable, ExecuteTransaction).
    db.exec("DROP TABLE IF EXISTS INDEXES;");
    db.exec(createIndexesSql(h));
    db.exec("DROP TABLE IF EXISTS SHARD_NAME;");
    db.exec("CREATE TABLE SHARD_NAME(NAME TEXT NOT NULL);");
    db.prepare("INSERT INTO SHARD_NAME (NAME) VALUES (:SHARD_NAME);").run({ ":SHARD_NAME": shardName });
    const fields = h.indexFields ?? [];
    let cols =
      "ROW_ID,ROW_GROUP_ID,PAGE_ID_RAW,PAGE_OFFSET_RAW,PAGE_OFFSET_RAW_END,PAGE_ID_BLOB,PAGE_OFFSET_BLOB,PAGE_OFFSET_BLOB_END";
    let vals =
      ":ROW_ID,:ROW_GROUP_ID,:PAGE_ID_RAW,:PAGE_OFFSET_RAW,:PAGE_OFFSET_RAW_END,:PAGE_ID_BLOB,:PAGE_OFFSET_BLOB,:PAGE_OFFSET_BLOB_END";
    fields.forEach((f, i) => {
      cols += `,INC_${i},${dbFieldName(f.field, f.schemaId)}`;
      vals += `,:INC_${i},:${dbFieldName(f.field, f.schemaId)}`;
    });
    db.exec("BEGIN TRANSACTION;");
    const blobByType = new Map<number, PageInfo>();
    for (const p of h.pages) if (p.pageType === "BLOB_DATA") blobByType.set(p.pageTypeId, p);
    for (const raw of h.pages.filter((p) => p.pageType === "RAW_DATA")) {
      const stmt = db.prepare(`INSERT INTO INDEXES (${cols}) VALUES( ${vals} )`);
      for (const [gid, offset] of raw.rowGroupIds) {
        const blob = blobByType.get(gid);
        if (!blob) continue;
        let rawOff = offset, blobOff = 0;
        for (let r = blob.startRowId; r < blob.endRowId; r++) {
          const p: Record<string, number | bigint | string> = {
            ":ROW_ID": BigInt(r),
            ":ROW_GROUP_ID": BigInt(blob.pageTypeId),
            ":PAGE_ID_RAW": BigInt(raw.pageId),
            ":PAGE_OFFSET_RAW": BigInt(rawOff),
            ":PAGE_OFFSET_RAW_END": BigInt(rawOff + 8 + facts.rawLen[r]),
            ":PAGE_ID_BLOB": BigInt(blob.pageId),
            ":PAGE_OFFSET_BLOB": BigInt(blobOff),
            ":PAGE_OFFSET_BLOB_END": BigInt(blobOff + 8 + facts.blobLen[r]),
          };
          rawOff += 8 + facts.rawLen[r];
          blobOff += 8 + facts.blobLen[r];
          fields.forEach((f, i) => {
            p[`:INC_${i}`] = 0n;
            let v = facts.index[r][i];
            // Files from MindSpore before r1.0 stored string index values JSON-quoted (§6).
            if (quotedStrings && typeof v === "string") v = JSON.stringify(v);
            p[`:${dbFieldName(f.field, f.schemaId)}`] = typeof v === "number" && Number.isInteger(v) &&
                SQL_TYPE[h.schemas[f.schemaId].schema[f.field].type] === "INTEGER"
              ? BigInt(v)
              : v;
          });
          stmt.run(p);
        }
      }
    }
    db.exec("END TRANSACTION;");
  } finally {
    db.close();
  }
}

/** Reads a shard's `.db` index: the shard name and every INDEXES row ordered by ROW_ID. */
export function readIndexDb(dbFile: string): { shardName: string; rows: Record<string, unknown>[] } {
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(dbFile, { readOnly: true });
  } catch (e) {
    throw new InputError(`cannot open index database (${(e as Error).message})`, { file: dbFile });
  }
  try {
    const name = db.prepare("SELECT NAME FROM SHARD_NAME").get() as { NAME?: string } | undefined;
    const rows = db.prepare("SELECT * FROM INDEXES ORDER BY ROW_ID").all() as Record<string, unknown>[];
    return { shardName: String(name?.NAME ?? ""), rows };
  } catch (e) {
    throw new InputError(`not a MindRecord index database (${(e as Error).message})`, { file: dbFile });
  } finally {
    db.close();
  }
}

/** True when a `.db` stores string index values JSON-quoted (MindSpore before r1.0, §6). */
export function indexDbQuotesStrings(dbFile: string): boolean {
  const { rows } = readIndexDb(dbFile);
  return rows.some((r) =>
    Object.entries(r).some(([k, v]) => /_\d+$/.test(k) && typeof v === "string" && v.length >= 2 && v.startsWith('"'))
  );
}

// ---------------------------------------------------------------------------------------------------------------------
// Checking a .db against its shard

/** Where one row lives in its shard: what MindSpore's `.db` records for it (§6). */
export interface RowLocation {
  rowId: number;
  rowGroupId: number;
  pageIdRaw: number;
  pageOffsetRaw: number;
  pageOffsetRawEnd: number;
  pageIdBlob: number;
  pageOffsetBlob: number;
  pageOffsetBlobEnd: number;
}

/**
 * The location of every row of one shard, walked from the header's pages and
 * the length prefixes in them (ShardIndexGenerator::GenerateRowData order).
 */
export function rowLocations(file: string, h: MindRecordHeader): RowLocation[] {
  const blobByType = new Map<number, PageInfo>();
  for (const p of h.pages) if (p.pageType === "BLOB_DATA") blobByType.set(p.pageTypeId, p);
  const out: RowLocation[] = [];
  const fd = fs.openSync(file, "r");
  const u64 = new Uint8Array(8);
  const lenAt = (page: PageInfo, off: number, where: string): number => {
    if (off + 8 > page.pageSize) {
      throw new InputError(`length prefix past the end of page ${page.pageId}`, { file, where });
    }
    fs.readSync(fd, u64, 0, 8, h.headerSize + h.pageSize * page.pageId + off);
    const n = readBigU64(u64, 0, true);
    if (off + 8 + n > page.pageSize) {
      throw new InputError(`row runs past the end of page ${page.pageId}`, { file, where });
    }
    return n;
  };
  try {
    for (const raw of h.pages.filter((p) => p.pageType === "RAW_DATA")) {
      for (const [gid, offset] of raw.rowGroupIds) {
        const blob = blobByType.get(gid);
        if (!blob) continue;
        let r0 = offset, b0 = 0;
        for (let r = blob.startRowId; r < blob.endRowId; r++) {
          const where = `row ${r}`;
          const r1 = r0 + 8 + lenAt(raw, r0, where), b1 = b0 + 8 + lenAt(blob, b0, where);
          out.push({
            rowId: r,
            rowGroupId: blob.pageTypeId,
            pageIdRaw: raw.pageId,
            pageOffsetRaw: r0,
            pageOffsetRawEnd: r1,
            pageIdBlob: blob.pageId,
            pageOffsetBlob: b0,
            pageOffsetBlobEnd: b1,
          });
          r0 = r1;
          b0 = b1;
        }
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return out.sort((a, b) => a.rowId - b.rowId);
}

/**
 * Checks a shard's `.db` against its pages: the SHARD_NAME, and for every row
 * the page ids and offsets MindDataset would take from it. Returns the
 * problems found (empty when the index is right).
 */
export function verifyIndexDb(file: string, h: MindRecordHeader): string[] {
  const dbFile = file + ".db";
  if (!fs.existsSync(dbFile)) return [`${dbFile} is missing (MindSpore's MindDataset needs it)`];
  const { shardName, rows } = readIndexDb(dbFile);
  const problems: string[] = [];
  if (shardName !== path.basename(file)) problems.push(`${dbFile}: SHARD_NAME is ${JSON.stringify(shardName)}`);
  const locs = rowLocations(file, h);
  if (rows.length !== locs.length) problems.push(`${dbFile}: ${rows.length} rows, the shard holds ${locs.length}`);
  const cols: [keyof RowLocation, string][] = [
    ["rowId", "ROW_ID"],
    ["rowGroupId", "ROW_GROUP_ID"],
    ["pageIdRaw", "PAGE_ID_RAW"],
    ["pageOffsetRaw", "PAGE_OFFSET_RAW"],
    ["pageOffsetRawEnd", "PAGE_OFFSET_RAW_END"],
    ["pageIdBlob", "PAGE_ID_BLOB"],
    ["pageOffsetBlob", "PAGE_OFFSET_BLOB"],
    ["pageOffsetBlobEnd", "PAGE_OFFSET_BLOB_END"],
  ];
  for (let i = 0; i < Math.min(rows.length, locs.length) && problems.length < 10; i++) {
    for (const [k, col] of cols) {
      if (Number(rows[i][col]) !== locs[i][k]) {
        problems.push(`${dbFile}: row ${i} ${col} is ${rows[i][col]}, the pages say ${locs[i][k]}`);
        break;
      }
    }
  }
  return problems;
}
