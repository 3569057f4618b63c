/**
 * The convert stage: COCO json, Pascal VOC, ModelZoo TXT or MindRecord in;
 * MindRecord (SSD or full schema, N shards, `.db` indexes) or COCO
 * (`images/` + `annotations/instances.json`) out.
 *
 * What is written, exactly:
 * - SSD schema: MindSpore's `img_id` int32[1], `image` bytes, `annotation`
 *   int32[-1,5] with rows [ymin, xmin, ymax, xmax, label] (Python round(), y
 *   first, as create_coco_label; VOC records already carry create_voc_label's
 *   -1), one row per write_raw_data call, desc "ssd_json", 8 shards by default
 *   named `PREFIX0..PREFIX7`. Unlike the ModelZoo, images without boxes are
 *   kept (their annotation is [0, 5]) and TXT input is also written y first
 *   (the ModelZoo's TXT path writes x first, which its own loader then reads as
 *   y first). The SSD schema has no iscrowd: crowd boxes become plain boxes.
 * - Full schema: see {@linkcode FULL_SCHEMA}; COCO -> full -> COCO is exact.
 * - Every file is written under a temporary name and renamed into place, so
 *   re-running replaces outputs whole and a failure leaves earlier files intact.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { DetectionRecord } from "./detection_record.ts";
import { InputError } from "./errors.ts";
import { writeFileAtomic } from "./fs_atomic.ts";
import { Progress } from "./progress.ts";
import { type ClassMap, classMapFromNames, cocoClassMap, loadClassMap } from "./class_maps.ts";
import { type CocoCategory, cocoJson, guessCocoImages, readCoco } from "./coco_reader.ts";
import { formatReport, newReport, type Policy, type PolicyReport } from "./input_policy.ts";
import { readVoc } from "./voc_reader.ts";
import { readTxt } from "./txt_reader.ts";
import type { MindRecordRow } from "./mindrecord_format.ts";
import { detectFloatMode, openMindRecord } from "./mindrecord_reader.ts";
import { MindRecordWriter } from "./mindrecord_writer.ts";
import {
  detectionSchemaOf,
  FULL_FORMAT,
  FULL_SCHEMA,
  fullDesc,
  fullRowFromRecord,
  recordFromFullRow,
  recordFromSsdRow,
  SSD_DESC,
  SSD_SCHEMA,
  type SsdLayout,
  ssdRowFromRecord,
} from "./mindrecord_ssd.ts";

/** Options of {@linkcode convert}. */
export interface ConvertOptions {
  from: "coco" | "voc" | "txt" | "mindrecord";
  to: "mindrecord" | "coco";
  /** A COCO json, a VOC root, a TXT file, or any shard of a MindRecord set. */
  input: string;
  /** Image folder (COCO: file_name base; TXT: IMAGE_DIR; VOC: default ROOT/JPEGImages). */
  images?: string;
  out: string;
  /** MindRecord shard count (default 8, as the ModelZoo). */
  shards?: number;
  /** MindRecord file prefix (default "ssd.mindrecord"). */
  prefix?: string;
  /** MindRecord schema: "ssd" (default) or "full". */
  schema?: "ssd" | "full";
  policy?: Policy;
  /** "auto" (default), "coco", "voc" or a YAML class list. */
  classes?: string;
  /** VOC ImageSets/Main split name. */
  split?: string;
  /** Axis order of SSD annotation rows read from MindRecord input (default "yx"). */
  layout?: SsdLayout;
  /** MindRecord page size in bytes (default 32 MiB); header size follows MindSpore's default. */
  pageSize?: number;
  headerSize?: number;
  quiet?: boolean;
}

/** What {@linkcode convert} did. */
export interface ConvertResult {
  images: number;
  boxes: number;
  files: string[];
  report: PolicyReport;
}

interface Source {
  count: number;
  records: Iterable<DetectionRecord>;
  classMap: ClassMap;
  categories?: CocoCategory[];
  top?: Record<string, unknown>;
  report: PolicyReport;
  /** Set when the input is a MindRecord set in a non-detection schema (copied as is). */
  generic?: ReturnType<typeof openMindRecord>;
}

function openSource(o: ConvertOptions): Source {
  const policy = o.policy ?? "error";
  if (!fs.existsSync(o.input)) throw new InputError("input does not exist", { file: o.input });
  switch (o.from) {
    case "coco": {
      const cm = o.classes && o.classes !== "auto" ? loadClassMap(o.classes) : "auto";
      const images = o.images ?? guessCocoImages(o.input);
      const d = readCoco(o.input, { images, classes: cm, policy });
      return {
        count: d.records.length,
        records: d.records,
        classMap: d.classMap,
        categories: d.categories,
        top: d.top,
        report: d.report,
      };
    }
    case "voc": {
      const cm = o.classes && o.classes !== "auto" ? loadClassMap(o.classes) : undefined;
      const d = readVoc(o.input, { split: o.split, images: o.images, classes: cm, policy });
      return { count: d.records.length, records: d.records, classMap: d.classMap, report: d.report };
    }
    case "txt": {
      const cm = o.classes && o.classes !== "auto" ? loadClassMap(o.classes) : cocoClassMap();
      const d = readTxt(o.input, { images: o.images, classes: cm, policy });
      return { count: d.records.length, records: d.records, classMap: cm, report: d.report };
    }
    case "mindrecord": {
      const set = openMindRecord(o.input);
      const kind = detectionSchemaOf(set.schema);
      const report = newReport();
      if (!kind) return { count: set.numRows, records: [], classMap: cocoClassMap(), report, generic: set };
      const full = kind === "full" ? fullDesc(set.schema.desc) : null;
      let classMap = o.classes && o.classes !== "auto" ? loadClassMap(o.classes) : cocoClassMap();
      if (full && (!o.classes || o.classes === "auto")) {
        const cats = [...full.categories].sort((a, b) => a.id - b.id);
        classMap = classMapFromNames(cats.map((c) => c.name), o.input, cats.map((c) => c.id));
      }
      const records = (function* () {
        for (const row of set.rows()) {
          yield kind === "full" ? recordFromFullRow(row, o.input) : recordFromSsdRow(row, o.input, o.layout);
        }
      })();
      return { count: set.numRows, records, classMap, categories: full?.categories, top: full?.top, report };
    }
  }
  throw new InputError(`unknown --from ${JSON.stringify(o.from)}`);
}

function withImage(r: DetectionRecord): DetectionRecord {
  if (r.image) return r;
  try {
    return { ...r, image: Deno.readFileSync(r.file) };
  } catch (e) {
    throw new InputError(`cannot read image (${(e as Error).message})`, { file: r.file });
  }
}

function safeName(name: string, where: string): string {
  const n = path.normalize(name);
  if (path.isAbsolute(n) || n.startsWith("..") || n === "." || n === "") {
    throw new InputError(`image file_name ${JSON.stringify(name)} would leave the output folder`, { where });
  }
  return n;
}

/**
 * Runs the convert stage. Returns counts, the files written, and the policy
 * report (boxes clipped/dropped, images dropped).
 */
export async function convert(o: ConvertOptions): Promise<ConvertResult> {
  const src = openSource(o);
  const bar = new Progress(`convert ${o.from}->${o.to}`, src.count, { unit: "img", quiet: o.quiet });
  const files: string[] = [];
  let images = 0, boxes = 0;
  if (o.to === "mindrecord") {
    const base = path.join(o.out, o.prefix ?? "ssd.mindrecord");
    const shardCount = o.shards ?? 8;
    if (src.generic) {
      // A general schema: copy rows as they are, one write_raw_data call per row.
      const set = src.generic;
      const h = set.shards[0].header;
      const rows = set.rows();
      const first = rows.next();
      const w = new MindRecordWriter(base, {
        schema: set.schema.schema,
        desc: set.schema.desc,
        shardCount,
        version: set.version,
        indexFields: h.indexFields?.map((f) => f.field) ?? [],
        pageSize: o.pageSize ?? h.pageSize,
        headerSize: o.headerSize ?? h.headerSize,
        floats: detectFloatMode(set.floatStats),
      });
      try {
        if (!first.done) (w.write([first.value]), bar.tick());
        for (const r of rows) (w.write([r]), bar.tick());
        w.commit();
      } catch (e) {
        w.abort();
        throw e;
      }
      bar.done();
      return { images: w.rowCount, boxes: 0, files: w.files, report: src.report };
    }
    const full = o.schema === "full";
    const desc = full
      ? JSON.stringify({
        format: FULL_FORMAT,
        categories: src.categories ??
          src.classMap.names.slice(1).map((name, i) => ({
            id: src.classMap.categoryIds[i + 1],
            name,
            supercategory: "none",
          })),
        top: src.top ?? {},
      })
      : SSD_DESC;
    const w = new MindRecordWriter(base, {
      schema: full ? FULL_SCHEMA : SSD_SCHEMA,
      desc,
      shardCount,
      pageSize: o.pageSize,
      headerSize: o.headerSize,
    });
    try {
      for (const rec of src.records) {
        const r = withImage(rec);
        const row: MindRecordRow = full ? fullRowFromRecord(r, src.classMap, images) : ssdRowFromRecord(r);
        w.write([row]); // one row per write_raw_data call, as the ModelZoo scripts
        images++;
        boxes += r.labels.length;
        bar.tick();
      }
      w.commit();
    } catch (e) {
      w.abort();
      throw e;
    }
    files.push(...w.files);
  } else {
    if (src.generic) {
      throw new InputError("MindRecord input has no detection schema (img_id/image/annotation); cannot write COCO", {
        file: o.input,
      });
    }
    // Stage every file in a hidden folder inside OUT, then rename each into place: a failure
    // leaves OUT as it was, a success replaces files whole.
    const stage = path.join(o.out, `.convert-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`);
    const staged: string[] = [];
    try {
      const recs: DetectionRecord[] = [];
      const seen = new Set<string>();
      for (const rec of src.records) {
        const r = withImage(rec);
        const ex = (r.extra ?? {}) as { image?: { file_name?: string }; file_name?: string };
        const name = safeName(ex.image?.file_name ?? ex.file_name ?? path.basename(r.file), `image id ${r.imgId}`);
        if (seen.has(name)) {
          throw new InputError(`two images share the file_name ${JSON.stringify(name)}`, { file: o.input });
        }
        seen.add(name);
        const rel = path.join("images", name);
        fs.mkdirSync(path.dirname(path.join(stage, rel)), { recursive: true });
        fs.writeFileSync(path.join(stage, rel), r.image!);
        staged.push(rel);
        // Keep the record light: image bytes are on disk now.
        recs.push({ ...r, image: undefined, extra: { ...(r.extra ?? {}), file_name: name } });
        images++;
        boxes += r.labels.length;
        bar.tick();
      }
      // Full-schema rows know their source position (shards interleave rows): restore it.
      const seqOf = (r: DetectionRecord) => Number((r.extra as { seq?: number } | undefined)?.seq ?? 0);
      if (recs.some((r) => seqOf(r) !== 0)) recs.sort((a, b) => seqOf(a) - seqOf(b));
      const rel = path.join("annotations", "instances.json");
      const j = cocoJson(recs, src.classMap, { categories: src.categories, top: src.top });
      await writeFileAtomic(path.join(stage, rel), JSON.stringify(j) + "\n");
      staged.push(rel);
      for (const f of staged) {
        fs.mkdirSync(path.dirname(path.join(o.out, f)), { recursive: true });
        fs.renameSync(path.join(stage, f), path.join(o.out, f));
        files.push(path.join(o.out, f));
      }
    } finally {
      fs.rmSync(stage, { recursive: true, force: true });
    }
  }
  bar.done(formatReport(src.report));
  return { images, boxes, files, report: src.report };
}
