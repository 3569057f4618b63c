/**
 * The MindRecord shard header (§1, §2 of `mindrecord_format.md`): the u64
 * length and the JSON that open every shard file, with the schema, the index
 * fields, the shard addresses and the descriptor of every page (§2 P). Parsed
 * and validated from a file ({@linkcode readHeader}, {@linkcode parseHeader});
 * serialized byte-exact as ShardHeader::SerializeHeader ({@linkcode serializeHeader}).
 *
 * @module
 */
import * as fs from "node:fs";
import { InputError } from "./errors.ts";
import { compareUtf8 } from "./msgpack.ts";
import {
  FIELD_TYPES,
  type FieldSpec,
  type FieldType,
  type MindRecordSchema,
  type SchemaEntry,
} from "./mindrecord_format.ts";

// ---------------------------------------------------------------------------------------------------------------------
// Types

/** One page descriptor of a shard header (§2 P). */
export interface PageInfo {
  pageId: number;
  shardId: number;
  pageType: "BLOB_DATA" | "RAW_DATA";
  pageTypeId: number;
  startRowId: number;
  endRowId: number;
  /** [row group id (= blob page_type_id), byte offset in this raw page]. Empty = none. */
  rowGroupIds: [number, number][];
  /** Used bytes of the page slot. */
  pageSize: number;
}

/** A parsed shard header (§2). */
export interface MindRecordHeader {
  headerSize: number;
  pageSize: number;
  version: "2.0" | "3.0";
  /** Absent in version 2.0 files. */
  compressionSize?: number;
  /** null when the file has no index fields. */
  indexFields: { field: string; schemaId: number }[] | null;
  pages: PageInfo[];
  schemas: SchemaEntry[];
  shardAddresses: string[];
  shardId: number;
  statistics: unknown;
}

// ---------------------------------------------------------------------------------------------------------------------
// Header: canonical JSON (§2)

/** nlohmann dump(): compact, object keys sorted bytewise, strings escaped as JSON.stringify does. */
export function canonicalJson(v: unknown): string {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return "null";
    return JSON.stringify(v);
  }
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "string" || typeof v === "boolean") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).sort(compareUtf8);
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
}

function pageToJson(p: PageInfo): Record<string, unknown> {
  // meta/shard_page.cc GetPage: an empty row group list is written as [{"id":0,"offset":0}].
  const groups = p.rowGroupIds.length === 0 ? [[0, 0]] : p.rowGroupIds;
  return {
    end_row_id: p.endRowId,
    page_id: p.pageId,
    page_size: p.pageSize,
    page_type: p.pageType,
    page_type_id: p.pageTypeId,
    row_group_ids: groups.map(([id, offset]) => ({ id, offset })),
    shard_id: p.shardId,
    start_row_id: p.startRowId,
  };
}

/** A schema entry as the header JSON holds it (§2 SC); the reader compares shards by it. */
export function schemaToJson(s: SchemaEntry): Record<string, unknown> {
  const schema: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(s.schema)) {
    schema[k] = f.shape ? { shape: f.shape, type: f.type } : { type: f.type };
  }
  return { blob_fields: s.blobFields, desc: s.desc, schema };
}

/**
 * Serializes a header byte-exact as ShardHeader::SerializeHeader: a hand-ordered
 * top level, every nested value nlohmann-compact with sorted keys, empty lists
 * as null, and no compression_size in version 2.0.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const h = { headerSize: 16384, pageSize: 32768, version: "3.0" as const, compressionSize: 0, indexFields: null,
 *   pages: [], schemas: [{ desc: "d", blobFields: [], schema: { a: { type: "int32" as const } } }],
 *   shardAddresses: ["f"], shardId: 0, statistics: null };
 * assertEquals(serializeHeader(h).slice(0, 53), '{"header_size":16384,"index_fields":null,"page":null,');
 * ```
 */
export function serializeHeader(h: MindRecordHeader): string {
  const idx = h.indexFields && h.indexFields.length > 0
    ? canonicalJson(h.indexFields.map((f) => ({ index_field: f.field, schema_id: f.schemaId })))
    : "null";
  const pages = h.pages.length > 0 ? canonicalJson(h.pages.map(pageToJson)) : "null";
  const parts = [
    `"header_size":${h.headerSize}`,
    `"index_fields":${idx}`,
    `"page":${pages}`,
    `"page_size":${h.pageSize}`,
  ];
  if (h.version !== "2.0") parts.push(`"compression_size":${h.compressionSize ?? 0}`);
  parts.push(
    `"schema":${canonicalJson(h.schemas.map(schemaToJson))}`,
    `"shard_addresses":${h.shardAddresses.length > 0 ? canonicalJson(h.shardAddresses) : "null"}`,
    `"shard_id":${h.shardId}`,
    `"statistics":${canonicalJson(h.statistics ?? null)}`,
    `"version":${JSON.stringify(h.version)}`,
  );
  return `{${parts.join(",")}}`;
}

// ---------------------------------------------------------------------------------------------------------------------
// Header: parsing and validation

function isInt(v: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;
}

/**
 * Parses and validates a shard header from the first bytes of a file (§1, §2).
 * `fileSize` bounds every offset. Throws {@linkcode InputError} naming `file`,
 * including for legacy pre-1.0 files (schema types "number"/"array").
 */
export function parseHeader(head: Uint8Array, file: string, fileSize: number): MindRecordHeader {
  const fail = (msg: string, where = "header"): never => {
    throw new InputError(msg, { file, where });
  };
  if (head.length < 8) fail(`file too short (${fileSize} bytes) to be a MindRecord file`);
  const dv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const lenBig = dv.getBigUint64(0, true);
  if (lenBig > BigInt(Math.min(head.length - 8, 128 << 20)) || lenBig === 0n) {
    fail(`header length ${lenBig} does not fit the file (${fileSize} bytes); not a MindRecord file or truncated`);
  }
  const len = Number(lenBig);
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(head.subarray(8, 8 + len)));
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message}); not a MindRecord file`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail("header is not a JSON object");
  const j = raw as Record<string, unknown>;
  const version = j.version;
  if (version !== "2.0" && version !== "3.0") {
    fail(`unsupported MindRecord version ${JSON.stringify(version)} (supported: "2.0", "3.0")`);
  }
  const headerSize = j.header_size, pageSize = j.page_size;
  if (!isInt(headerSize, 8, 1 << 30) || headerSize < len + 8) fail(`bad header_size ${JSON.stringify(headerSize)}`);
  if (!isInt(pageSize, 1, 1 << 30)) fail(`bad page_size ${JSON.stringify(pageSize)}`);
  if (version === "3.0" && j.compression_size !== undefined && !isInt(j.compression_size)) {
    fail(`bad compression_size ${JSON.stringify(j.compression_size)}`);
  }
  // Schema (§2 SC). Legacy pre-1.0 files use JSON-schema-like types ("number", "array" with "items").
  if (!Array.isArray(j.schema) || j.schema.length === 0) fail("header has no schema");
  const schemas: SchemaEntry[] = [];
  for (const [si, s] of (j.schema as unknown[]).entries()) {
    const where = `header schema ${si}`;
    if (typeof s !== "object" || s === null) fail("schema entry is not an object", where);
    const se = s as Record<string, unknown>;
    if (typeof se.schema !== "object" || se.schema === null || Array.isArray(se.schema)) {
      fail("schema entry has no field map", where);
    }
    const schema: MindRecordSchema = {};
    for (const [name, spec] of Object.entries(se.schema as Record<string, unknown>)) {
      const sp = spec as Record<string, unknown> | null;
      const t = sp?.type;
      if (t === "number" || t === "array" || t === "object" || (sp && "items" in sp)) {
        fail(
          `legacy pre-1.0 MindRecord file: field "${name}" has type ${JSON.stringify(t)}; ` +
            `only int32/int64/float32/float64/string/bytes are supported. Re-create the file with MindSpore >= 1.0`,
          where,
        );
      }
      if (typeof t !== "string" || !FIELD_TYPES.has(t)) {
        fail(`field "${name}" has unknown type ${JSON.stringify(t)}`, where);
      }
      const f: FieldSpec = { type: t as FieldType };
      if (sp!.shape !== undefined) {
        const shape = sp!.shape;
        if (!Array.isArray(shape) || shape.length === 0 || shape.some((d) => !isInt(d, -1, 1 << 30) || d === 0)) {
          fail(`field "${name}" has a bad shape ${JSON.stringify(shape)}`, where);
        }
        if (t === "string" || t === "bytes") fail(`field "${name}" of type ${t} cannot have a shape`, where);
        f.shape = shape as number[];
      }
      schema[name] = f;
    }
    const bf = se.blob_fields ?? [];
    if (!Array.isArray(bf) || bf.some((b) => typeof b !== "string" || !(b in schema))) {
      fail(`blob_fields ${JSON.stringify(bf)} do not match the schema`, where);
    }
    schemas.push({ desc: typeof se.desc === "string" ? se.desc : "", blobFields: bf as string[], schema });
  }
  // Index fields.
  let indexFields: MindRecordHeader["indexFields"] = null;
  if (j.index_fields !== null && j.index_fields !== undefined) {
    if (!Array.isArray(j.index_fields)) fail("index_fields is not a list");
    indexFields = (j.index_fields as unknown[]).map((x) => {
      const o = x as Record<string, unknown> | null;
      if (!o || typeof o.index_field !== "string" || !isInt(o.schema_id, 0, schemas.length - 1)) {
        fail(`bad index field ${JSON.stringify(x)}`);
      }
      return { field: o!.index_field as string, schemaId: o!.schema_id as number };
    });
  }
  // Shard addresses.
  const addrs = j.shard_addresses;
  if (!Array.isArray(addrs) || addrs.length === 0 || addrs.some((a) => typeof a !== "string" || a === "")) {
    fail(`bad shard_addresses ${JSON.stringify(addrs)}`);
  }
  const shardId = j.shard_id;
  if (!isInt(shardId, 0, (addrs as string[]).length - 1)) fail(`bad shard_id ${JSON.stringify(shardId)}`);
  // Pages (§2 P).
  const pages: PageInfo[] = [];
  const pl = j.page ?? [];
  if (!Array.isArray(pl)) fail("page is not a list");
  for (const [i, x] of (pl as unknown[]).entries()) {
    const where = `header page ${i}`;
    const o = x as Record<string, unknown> | null;
    if (!o || typeof o !== "object") fail("page is not an object", where);
    const p = o!;
    if (p.page_type !== "BLOB_DATA" && p.page_type !== "RAW_DATA") {
      fail(`bad page_type ${JSON.stringify(p.page_type)}`, where);
    }
    for (const k of ["page_id", "shard_id", "page_type_id", "start_row_id", "end_row_id", "page_size"]) {
      if (!isInt(p[k])) fail(`bad ${k} ${JSON.stringify(p[k])}`, where);
    }
    if (!Array.isArray(p.row_group_ids)) fail("bad row_group_ids", where);
    const groups: [number, number][] = (p.row_group_ids as unknown[]).map((g) => {
      const go = g as Record<string, unknown> | null;
      if (!go || !isInt(go.id) || !isInt(go.offset)) fail(`bad row group ${JSON.stringify(g)}`, where);
      return [go!.id as number, go!.offset as number];
    });
    const page: PageInfo = {
      pageId: p.page_id as number,
      shardId: p.shard_id as number,
      pageType: p.page_type as PageInfo["pageType"],
      pageTypeId: p.page_type_id as number,
      startRowId: p.start_row_id as number,
      endRowId: p.end_row_id as number,
      rowGroupIds: groups,
      pageSize: p.page_size as number,
    };
    if (page.endRowId < page.startRowId) fail("end_row_id < start_row_id", where);
    if (page.pageSize > (pageSize as number)) {
      fail(`page_size ${page.pageSize} exceeds the page slot ${pageSize}`, where);
    }
    const end = (headerSize as number) + (pageSize as number) * page.pageId + page.pageSize;
    if (end > fileSize) {
      fail(`page ${page.pageId} ends at byte ${end}, past the end of the file (${fileSize} bytes)`, where);
    }
    pages.push(page);
  }
  return {
    headerSize: headerSize as number,
    pageSize: pageSize as number,
    version: version as "2.0" | "3.0",
    compressionSize: version === "2.0" ? undefined : (j.compression_size as number | undefined) ?? 0,
    indexFields,
    pages,
    schemas,
    shardAddresses: addrs as string[],
    shardId: shardId as number,
    statistics: j.statistics ?? null,
  };
}

/** Reads and parses the header of one shard file. */
export function readHeader(file: string): MindRecordHeader {
  let fd = -1;
  try {
    fd = fs.openSync(file, "r");
    const size = fs.fstatSync(fd).size;
    const first = new Uint8Array(8);
    fs.readSync(fd, first, 0, Math.min(8, size), 0);
    if (size < 8) return parseHeader(first.subarray(0, size), file, size);
    const len = new DataView(first.buffer).getBigUint64(0, true);
    const n = Number(len > BigInt(size - 8) ? BigInt(size - 8) : len);
    const head = new Uint8Array(8 + Math.min(n, 128 << 20));
    fs.readSync(fd, head, 0, head.length, 0);
    return parseHeader(head, file, size);
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(`cannot read MindRecord file (${(e as Error).message})`, { file, cause: e });
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}
