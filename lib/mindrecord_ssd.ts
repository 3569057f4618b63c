/**
 * Detection data in MindRecord: the ModelZoo SSD schema (§9 of
 * `mindrecord_format.md`) and this workbench's lossless "full" schema, the
 * rows of each to and from {@linkcode DetectionRecord}, and reading detection
 * records for training and evaluation from a set (or from a COCO json).
 *
 * @module
 */
import { pyRound } from "./py_round.ts";
import * as fs from "node:fs";
import * as path from "node:path";
import { InputError } from "./errors.ts";
import type { DetectionRecord } from "./detection_record.ts";
import type { ClassMap } from "./class_maps.ts";
import { type CocoCategory, guessCocoImages, readCoco } from "./coco_reader.ts";
import { imageSize } from "./image_header.ts";
import type { Policy } from "./input_policy.ts";
import type { FieldValue, MindRecordRow, MindRecordSchema, NdArray, SchemaEntry } from "./mindrecord_format.ts";
import { type FieldRef, openMindRecord } from "./mindrecord_reader.ts";

// ---------------------------------------------------------------------------------------------------------------------
// Detection schemas: the ModelZoo SSD schema and this workbench's lossless "full" schema

/**
 * The ModelZoo SSD schema (dataset.py data_to_mindrecord_byte_image, §9):
 * `annotation` rows are [ymin, xmin, ymax, xmax, class] in rounded pixels.
 */
export const SSD_SCHEMA: MindRecordSchema = {
  img_id: { type: "int32", shape: [1] },
  image: { type: "bytes" },
  annotation: { type: "int32", shape: [-1, 5] },
};

/** The desc MindSpore's SSD scripts give their schema. */
export const SSD_DESC = "ssd_json";

/**
 * The "full" schema (`convert --schema full`): the SSD columns plus every COCO
 * annotation field, so COCO -> MindRecord -> COCO is exact. `bbox` holds COCO
 * [x, y, w, h] as float64; `meta` holds the source image and annotation objects
 * as JSON; `seq` is the image's position in the source (shards interleave rows,
 * so COCO output is put back in this order); the desc holds {"format",
 * "categories", "top"} as JSON.
 */
export const FULL_SCHEMA: MindRecordSchema = {
  img_id: { type: "int64" },
  file_name: { type: "string" },
  width: { type: "int32" },
  height: { type: "int32" },
  image: { type: "bytes" },
  annotation: { type: "int32", shape: [-1, 5] },
  bbox: { type: "float64", shape: [-1, 4] },
  area: { type: "float64", shape: [-1] },
  iscrowd: { type: "int32", shape: [-1] },
  category_id: { type: "int64", shape: [-1] },
  label: { type: "int32", shape: [-1] },
  ann_id: { type: "int64", shape: [-1] },
  meta: { type: "bytes" },
  seq: { type: "int64" },
};

/** The desc format tag of the full schema. */
export const FULL_FORMAT = "ssd-workbench/full-v1";

/** Axis order of SSD `annotation` rows: "yx" (COCO and VOC, the default) or "xy" (ModelZoo's TXT path). */
export type SsdLayout = "yx" | "xy";

/**
 * The SSD-schema row of a record: boxes rounded (Python round) and written y
 * first, as create_coco_label; VOC records already carry the ModelZoo's -1.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import type { NdArray } from "./mindrecord_format.ts";
 * const rec = { imgId: 3, file: "a.jpg", width: 9, height: 9, boxes: new Float64Array([1.5, 2.5, 4, 6]),
 *   labels: new Int32Array([7]), iscrowd: new Uint8Array(1), image: new Uint8Array([1]) };
 * assertEquals([...(ssdRowFromRecord(rec).annotation as NdArray).data], [2, 2, 6, 4, 7]);
 * ```
 */
export function ssdRowFromRecord(r: DetectionRecord, layout: SsdLayout = "yx"): MindRecordRow {
  if (!r.image) throw new InputError("record has no image bytes", { file: r.file });
  if (!(r.imgId >= -2147483648 && r.imgId <= 2147483647)) {
    throw new InputError(`image id ${r.imgId} does not fit the SSD schema's int32 img_id`, { file: r.file });
  }
  const n = r.labels.length;
  const ann = new Int32Array(n * 5); // [N, 5]
  for (let i = 0; i < n; i++) {
    const [x1, y1, x2, y2] = r.boxes.subarray(i * 4, i * 4 + 4);
    const row = layout === "yx" ? [y1, x1, y2, x2] : [x1, y1, x2, y2];
    for (let k = 0; k < 4; k++) ann[i * 5 + k] = pyRound(row[k]);
    ann[i * 5 + 4] = r.labels[i];
  }
  return {
    img_id: { dtype: "int32", shape: [1], data: Int32Array.of(r.imgId) },
    image: r.image,
    annotation: { dtype: "int32", shape: [n, 5], data: ann },
  };
}

function nd(v: FieldValue | undefined, name: string, file: string): NdArray {
  if (!v || typeof v !== "object" || !("data" in v)) throw new InputError(`row has no array field "${name}"`, { file });
  return v;
}

function imageName(imgId: number, image: Uint8Array): string {
  return `${imgId}.${image[0] === 0x89 && image[1] === 0x50 ? "png" : "jpg"}`;
}

/** The record of an SSD-schema row; width and height come from the image header. */
export function recordFromSsdRow(row: MindRecordRow, file: string, layout: SsdLayout = "yx"): DetectionRecord {
  const image = row.image;
  if (!(image instanceof Uint8Array)) throw new InputError(`row has no bytes field "image"`, { file });
  const idArr = nd(row.img_id, "img_id", file);
  const imgId = Number(idArr.data[0] ?? 0);
  const ann = nd(row.annotation, "annotation", file);
  if (ann.data.length % 5 !== 0) throw new InputError(`annotation of image ${imgId} is not [N, 5]`, { file });
  const size = imageSize(image);
  if (!size) throw new InputError(`image of img_id ${imgId} is not a readable JPEG or PNG`, { file });
  const n = ann.data.length / 5;
  const boxes = new Float64Array(n * 4), labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = [0, 1, 2, 3, 4].map((k) => Number(ann.data[i * 5 + k]));
    const [x1, y1, x2, y2] = layout === "yx" ? [v[1], v[0], v[3], v[2]] : [v[0], v[1], v[2], v[3]];
    boxes.set([x1, y1, x2, y2], i * 4);
    labels[i] = v[4];
  }
  return { imgId, file: imageName(imgId, image), ...size, boxes, labels, iscrowd: new Uint8Array(n), image };
}

/** The full-schema row of a record (keeps COCO's float boxes, area, iscrowd, ids and every other field). */
export function fullRowFromRecord(r: DetectionRecord, classMap: ClassMap, seq = 0): MindRecordRow {
  const ssd = ssdRowFromRecord({ ...r, imgId: 0 });
  const n = r.labels.length;
  const ex = (r.extra ?? {}) as {
    image?: Record<string, unknown>;
    annotations?: Record<string, unknown>[];
    file_name?: string;
  };
  const anns = ex.annotations && ex.annotations.length === n ? ex.annotations : null;
  const bbox = new Float64Array(n * 4),
    area = new Float64Array(n),
    catId = new BigInt64Array(n),
    annId = new BigInt64Array(n);
  for (let i = 0; i < n; i++) {
    const [x1, y1, x2, y2] = r.boxes.subarray(i * 4, i * 4 + 4);
    const a = anns?.[i];
    const bb = a && Array.isArray(a.bbox) ? (a.bbox as number[]) : [x1, y1, x2 - x1, y2 - y1];
    bbox.set(bb, i * 4);
    area[i] = a && typeof a.area === "number" ? a.area : bb[2] * bb[3];
    catId[i] = BigInt(
      a && Number.isInteger(a.category_id)
        ? (a.category_id as number)
        : (classMap.categoryIds[r.labels[i]] ?? r.labels[i]),
    );
    annId[i] = BigInt(a && Number.isInteger(a.id) ? (a.id as number) : i + 1);
  }
  const fileName = (ex.image?.file_name as string | undefined) ?? ex.file_name ?? path.basename(r.file);
  const meta = new TextEncoder().encode(JSON.stringify({ image: ex.image ?? null, annotations: anns }));
  return {
    img_id: r.imgId,
    file_name: fileName,
    width: r.width,
    height: r.height,
    image: r.image!,
    annotation: ssd.annotation,
    bbox: { dtype: "float64", shape: [n, 4], data: bbox },
    area: { dtype: "float64", shape: [n], data: area },
    iscrowd: { dtype: "int32", shape: [n], data: Int32Array.from(r.iscrowd) },
    category_id: { dtype: "int64", shape: [n], data: catId },
    label: { dtype: "int32", shape: [n], data: Int32Array.from(r.labels) },
    ann_id: { dtype: "int64", shape: [n], data: annId },
    meta,
    seq,
  };
}

/** The record of a full-schema row, with `extra.image` / `extra.annotations` restored for exact COCO output. */
export function recordFromFullRow(row: MindRecordRow, file: string): DetectionRecord {
  const image = row.image;
  if (!(image instanceof Uint8Array)) throw new InputError(`row has no bytes field "image"`, { file });
  const imgId = Number(row.img_id);
  const where = `img_id ${imgId}`;
  const bb = nd(row.bbox, "bbox", file), label = nd(row.label, "label", file), crowd = nd(row.iscrowd, "iscrowd", file);
  const n = label.data.length;
  if (bb.data.length !== n * 4 || crowd.data.length !== n) {
    throw new InputError("bbox/label/iscrowd lengths disagree", { file, where });
  }
  const boxes = new Float64Array(n * 4);
  for (let i = 0; i < n; i++) {
    const [x, y, w, h] = [0, 1, 2, 3].map((k) => Number(bb.data[i * 4 + k]));
    boxes.set([x, y, x + w, y + h], i * 4);
  }
  let meta: { image?: Record<string, unknown> | null; annotations?: Record<string, unknown>[] | null } = {};
  if (row.meta instanceof Uint8Array && row.meta.length > 0) {
    try {
      meta = JSON.parse(new TextDecoder().decode(row.meta));
    } catch (e) {
      throw new InputError(`meta field is not JSON (${(e as Error).message})`, { file, where });
    }
  }
  const extra: Record<string, unknown> = { file_name: row.file_name, seq: Number(row.seq ?? 0) };
  if (meta.image) extra.image = meta.image;
  if (meta.annotations) extra.annotations = meta.annotations;
  return {
    imgId,
    file: String(row.file_name ?? imageName(imgId, image)),
    width: Number(row.width),
    height: Number(row.height),
    boxes,
    labels: Int32Array.from(label.data as Int32Array),
    iscrowd: Uint8Array.from(crowd.data as Int32Array),
    image,
    extra,
  };
}

/** Which detection schema a set uses. */
export function detectionSchemaOf(schema: SchemaEntry): "ssd" | "full" | null {
  const s = schema.schema;
  if (s.bbox && s.label && s.iscrowd && s.image?.type === "bytes" && s.img_id) return "full";
  if (s.annotation && s.image?.type === "bytes" && s.img_id) return "ssd";
  return null;
}

/** The desc JSON of a full-schema set: categories and top-level COCO keys. */
export function fullDesc(desc: string): { categories: CocoCategory[]; top: Record<string, unknown> } | null {
  try {
    const j = JSON.parse(desc);
    if (j && j.format === FULL_FORMAT && Array.isArray(j.categories)) {
      return { categories: j.categories, top: j.top ?? {} };
    }
  } catch { /* not ours */ }
  return null;
}

/** Options for {@linkcode readDetectionRecords}. */
export interface DetectionReadOptions {
  /** Image folder for COCO json input (default: guessed, see guessCocoImages). */
  images?: string;
  policy?: Policy;
  /** Class map for COCO json input ("auto" default). */
  classes?: ClassMap | "auto";
  /** Axis order of SSD-schema annotation rows (default "yx"). */
  layout?: SsdLayout;
  /** Read only this MindRecord file, not its sibling shards. */
  singleShard?: boolean;
  /**
   * Leave the image bytes on disk: records get `imageAt` (see {@linkcode readImageAt}) instead of `image`, and only
   * the head of each image is read, for its size. Memory then does not grow with the images.
   */
  lazyImages?: boolean;
}

/** Bytes read from the head of an image for its size; the whole image when its header lies further in. */
const IMAGE_HEAD_BYTES = 4096;

function readRef(ref: FieldRef, length = ref.length): Uint8Array {
  const n = Math.min(length, ref.length);
  const b = new Uint8Array(n);
  let fd: number;
  try {
    fd = fs.openSync(ref.file, "r");
  } catch (e) {
    throw new InputError(`cannot read MindRecord file (${(e as Error).message})`, { file: ref.file, cause: e });
  }
  try {
    const got = fs.readSync(fd, b, 0, n, ref.offset);
    if (got !== n) {
      throw new InputError(`file is truncated: ${n} bytes at offset ${ref.offset} expected`, { file: ref.file });
    }
  } finally {
    fs.closeSync(fd);
  }
  return b;
}

/**
 * Reads the image bytes a lazily indexed record points at.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const [r] = iterDetectionRecords("tests/fixtures/mindrecord/ssd_coco.mindrecord0", { lazyImages: true });
 * const [e] = iterDetectionRecords("tests/fixtures/mindrecord/ssd_coco.mindrecord0");
 * assertEquals([r.image, readImageAt(r.imageAt!)], [undefined, e.image]);
 * ```
 */
export function readImageAt(ref: FieldRef): Uint8Array {
  return readRef(ref);
}

/**
 * Streams {@linkcode DetectionRecord}s (with `image` bytes) from a MindRecord
 * set in the SSD or full schema, in shard then row order.
 */
export function* iterDetectionRecords(file: string, options: DetectionReadOptions = {}): Generator<DetectionRecord> {
  const set = openMindRecord(file, { singleShard: options.singleShard });
  const kind = detectionSchemaOf(set.schema);
  if (!kind) {
    throw new InputError(
      `MindRecord schema has no img_id/image/annotation columns (fields: ${Object.keys(set.schema.schema).join(", ")})`,
      { file, where: "header schema 0" },
    );
  }
  if (!options.lazyImages) {
    for (const row of set.rows()) {
      yield kind === "full" ? recordFromFullRow(row, file) : recordFromSsdRow(row, file, options.layout);
    }
    return;
  }
  for (const row of set.lazyRows(new Set(["image"]))) {
    const ref = row.refs!.image;
    let head = readRef(ref, IMAGE_HEAD_BYTES);
    if (!imageSize(head) && ref.length > head.length) head = readRef(ref);
    row.image = head;
    delete row.refs;
    const rec = kind === "full" ? recordFromFullRow(row, ref.file) : recordFromSsdRow(row, ref.file, options.layout);
    delete rec.image;
    rec.imageAt = ref;
    yield rec;
  }
}

/**
 * Reads detection records for training or evaluation from a MindRecord set
 * (SSD or full schema; any shard, usually `ssd.mindrecord0`) or a COCO json
 * (with `options.images` as the image folder). Records carry `image` bytes.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const recs = readDetectionRecords("tests/fixtures/coco/instances.json"); // images found in ./images
 * assertEquals(recs.every((r) => r.image !== undefined), true);
 * ```
 */
export function readDetectionRecords(file: string, options: DetectionReadOptions = {}): DetectionRecord[] {
  if (file.toLowerCase().endsWith(".json")) {
    return readCoco(file, {
      images: options.images ?? guessCocoImages(file),
      policy: options.policy,
      classes: options.classes,
      readImages: true,
    })
      .records;
  }
  return [...iterDetectionRecords(file, options)];
}
