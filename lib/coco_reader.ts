/**
 * COCO instances json <-> {@linkcode DetectionRecord}. Bad boxes, unknown
 * classes and missing images follow the readers' shared policy
 * (`input_policy.ts`).
 *
 * COCO boxes are `[x, y, w, h]` in pixels; records hold `x1, y1, x2, y2`. Class
 * labels come from a class map by category *name*, as the ModelZoo's
 * create_coco_label does with the tutorial's `train_cls`.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { DetectionRecord } from "./detection_record.ts";
import { InputError } from "./errors.ts";
import { type ClassMap, classMapFromNames, COCO_TRAIN_CLS, cocoClassMap, labelOf } from "./class_maps.ts";
import { writeFileAtomic } from "./fs_atomic.ts";
import { checkBox, newReport, type Policy, type PolicyReport, rejectItem } from "./input_policy.ts";
import { parseJsonText } from "./json_text.ts";

// ---------------------------------------------------------------------------------------------------------------------
// COCO reading

/** Options for {@linkcode readCoco}. */
export interface CocoReadOptions {
  /** Folder the image `file_name`s are relative to; without it images are neither checked nor read. */
  images?: string;
  /** Class map; "auto" (default) = COCO's 80 when every category name is one of them, else the json's categories. */
  classes?: ClassMap | "auto";
  policy?: Policy;
  /** Read each image's bytes into `record.image` (needs `images`). */
  readImages?: boolean;
}

/** A COCO category. */
export interface CocoCategory {
  id: number;
  name: string;
  supercategory?: string;
  [k: string]: unknown;
}

/** What {@linkcode readCoco} returns. */
export interface CocoDataset {
  records: DetectionRecord[];
  classMap: ClassMap;
  categories: CocoCategory[];
  /** Top-level keys other than images/annotations/categories (info, licenses, type ...), kept for round trips. */
  top: Record<string, unknown>;
  report: PolicyReport;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** The class map of a COCO file's categories under "auto". */
export function autoClassMap(categories: CocoCategory[], file: string): ClassMap {
  const coco = new Set(COCO_TRAIN_CLS.slice(1));
  if (categories.length > 0 && categories.every((c) => coco.has(c.name))) return cocoClassMap();
  const sorted = [...categories].sort((a, b) => a.id - b.id);
  return classMapFromNames(sorted.map((c) => c.name), file, sorted.map((c) => c.id));
}

/**
 * Reads a COCO instances json into records (one per image, in `images` order).
 * Every problem is an {@linkcode InputError} naming the file and the record
 * (`images[3] (id 17)`, `annotations[40] (id 901)`), or is clipped / dropped
 * and counted under the policy. Each record's `extra` keeps the source objects
 * (`image`, `annotations`, `categoryIds`) for exact round trips.
 */
export function readCoco(file: string, options: CocoReadOptions = {}): CocoDataset {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new InputError(`cannot read (${(e as Error).message})`, { file });
  }
  return parseCoco(text, file, options);
}

/** {@linkcode readCoco} on json text already in memory (`file` names it in errors). */
export function parseCoco(text: string, file: string, options: CocoReadOptions = {}): CocoDataset {
  const policy = options.policy ?? "error";
  const report = newReport();
  const j = parseJsonText(text, file);
  if (!isObj(j)) throw new InputError("a COCO instances file must hold a JSON object", { file });
  for (const k of ["images", "annotations", "categories"]) {
    if (!Array.isArray(j[k])) throw new InputError(`missing or non-list "${k}"`, { file, where: k });
  }
  const categories: CocoCategory[] = [];
  const catById = new Map<number, CocoCategory>();
  (j.categories as unknown[]).forEach((c, i) => {
    const where = `categories[${i}]`;
    if (!isObj(c) || !Number.isInteger(c.id) || typeof c.name !== "string") {
      throw new InputError(`a category needs an integer "id" and a string "name"`, { file, where });
    }
    if (catById.has(c.id as number)) throw new InputError(`duplicate category id ${c.id}`, { file, where });
    catById.set(c.id as number, c as CocoCategory);
    categories.push(c as CocoCategory);
  });
  const classMap = !options.classes || options.classes === "auto" ? autoClassMap(categories, file) : options.classes;
  const records: DetectionRecord[] = [];
  const byId = new Map<number, { rec: DetectionRecord; anns: Record<string, unknown>[]; boxes: number[][] }>();
  (j.images as unknown[]).forEach((im, i) => {
    const where = `images[${i}]${isObj(im) && im.id !== undefined ? ` (id ${JSON.stringify(im.id)})` : ""}`;
    if (!isObj(im)) throw new InputError("an image entry must be an object", { file, where });
    if (!Number.isSafeInteger(im.id)) throw new InputError(`image "id" must be an integer`, { file, where });
    if (typeof im.file_name !== "string" || im.file_name === "") {
      throw new InputError(`image "file_name" must be a non-empty string`, { file, where });
    }
    for (const k of ["width", "height"]) {
      if (!Number.isInteger(im[k]) || (im[k] as number) <= 0) {
        throw new InputError(`image "${k}" must be a positive integer, got ${JSON.stringify(im[k])}`, { file, where });
      }
    }
    if (byId.has(im.id as number)) throw new InputError(`duplicate image id ${im.id}`, { file, where });
    const rec: DetectionRecord = {
      imgId: im.id as number,
      file: options.images ? path.join(options.images, im.file_name as string) : (im.file_name as string),
      width: im.width as number,
      height: im.height as number,
      boxes: new Float64Array(0),
      labels: new Int32Array(0),
      iscrowd: new Uint8Array(0),
      extra: { image: im },
    };
    byId.set(im.id as number, { rec, anns: [], boxes: [] });
    records.push(rec);
  });
  const labels = new Map<number, number[]>(), crowd = new Map<number, number[]>(), kept = new Map<number, unknown[]>();
  (j.annotations as unknown[]).forEach((a, i) => {
    const where = `annotations[${i}]${isObj(a) && a.id !== undefined ? ` (id ${JSON.stringify(a.id)})` : ""}`;
    if (!isObj(a)) throw new InputError("an annotation must be an object", { file, where });
    const img = byId.get(a.image_id as number);
    if (!img) {
      throw new InputError(`annotation refers to unknown image_id ${JSON.stringify(a.image_id)}`, { file, where });
    }
    const bb = a.bbox;
    if (!Array.isArray(bb) || bb.length !== 4 || bb.some((v) => typeof v !== "number")) {
      throw new InputError(`"bbox" must be [x, y, w, h] numbers, got ${JSON.stringify(bb)}`, { file, where });
    }
    if (a.iscrowd !== undefined && a.iscrowd !== 0 && a.iscrowd !== 1 && a.iscrowd !== true && a.iscrowd !== false) {
      throw new InputError(`"iscrowd" must be 0 or 1, got ${JSON.stringify(a.iscrowd)}`, { file, where });
    }
    const cat = catById.get(a.category_id as number);
    const label = cat ? labelOf(classMap, cat.name) : -1;
    if (label < 0) {
      const what = cat
        ? `class "${cat.name}" is not in the class map (${classMap.source})`
        : `unknown category_id ${JSON.stringify(a.category_id)}`;
      rejectItem(policy, report, "box", what, file, where);
      return;
    }
    const [x, y, w, h] = bb as number[];
    const box = checkBox([x, y, x + w, y + h], img.rec.width, img.rec.height, policy, report, file, where);
    if (!box) return;
    const id = img.rec.imgId;
    img.boxes.push(box);
    if (!labels.has(id)) (labels.set(id, []), crowd.set(id, []), kept.set(id, []));
    labels.get(id)!.push(label);
    crowd.get(id)!.push(a.iscrowd ? 1 : 0);
    const clipped = box[0] !== x || box[1] !== y || box[2] !== x + w || box[3] !== y + h;
    kept.get(id)!.push(clipped ? { ...a, bbox: [box[0], box[1], box[2] - box[0], box[3] - box[1]] } : a);
  });
  const out: DetectionRecord[] = [];
  for (const rec of records) {
    const img = byId.get(rec.imgId)!;
    const n = img.boxes.length;
    rec.boxes = Float64Array.from(img.boxes.flat()); // [N, 4]
    rec.labels = Int32Array.from(labels.get(rec.imgId) ?? []); // [N]
    rec.iscrowd = Uint8Array.from(crowd.get(rec.imgId) ?? []); // [N]
    rec.extra = { ...rec.extra, annotations: kept.get(rec.imgId) ?? [] };
    if (rec.labels.length !== n) throw new Error("internal: label count mismatch");
    if (options.images) {
      if (!fs.existsSync(rec.file)) {
        rejectItem(policy, report, "image", `image file ${rec.file} is missing`, file, `image id ${rec.imgId}`);
        continue;
      }
      if (options.readImages) rec.image = Deno.readFileSync(rec.file);
    }
    out.push(rec);
  }
  const top: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(j)) if (k !== "images" && k !== "annotations" && k !== "categories") top[k] = v;
  return { records: out, classMap, categories, top, report };
}

/**
 * The image folder of a COCO json when --images is not given: the first of
 * `JSON_DIR`, `JSON_DIR/images`, `JSON_DIR/../SPLIT` (COCO's own layout, e.g. annotations/instances_val2017.json
 * next to val2017/) and `JSON_DIR/../images/SPLIT` (this workbench's synth layout) that holds the
 * first image; `JSON_DIR` when none does (the missing image is then reported).
 */
export function guessCocoImages(json: string): string {
  const dir = path.dirname(json);
  const split = /instances_(.+)\.json$/.exec(path.basename(json))?.[1];
  const candidates = [
    dir,
    path.join(dir, "images"),
    ...(split ? [path.join(dir, "..", split), path.join(dir, "..", "images", split)] : []),
  ];
  let first: string | undefined;
  try {
    const m = /"file_name"\s*:\s*"((?:[^"\\]|\\.)*)"/.exec(fs.readFileSync(json, "utf8").slice(0, 1 << 20));
    first = m ? JSON.parse(`"${m[1]}"`) : undefined;
  } catch {
    return dir;
  }
  if (!first) return dir;
  return candidates.find((c) => fs.existsSync(path.join(c, first!))) ?? dir;
}

// ---------------------------------------------------------------------------------------------------------------------
// COCO writing

/** Options for {@linkcode cocoJson}. */
export interface CocoWriteOptions {
  /** Categories to write; default from the class map (name + categoryIds). */
  categories?: CocoCategory[];
  /** Extra top-level keys (info, licenses ...). */
  top?: Record<string, unknown>;
}

/**
 * Builds a COCO instances object from records. A record's `extra.image` and
 * `extra.annotations` (as {@linkcode readCoco} leaves them) are written back
 * as they were; otherwise images get `{id, file_name, width, height}` and
 * annotations `{id, image_id, category_id, bbox, area, iscrowd}` with ids
 * counted from 1 and area = w*h.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { cocoClassMap } from "./class_maps.ts";
 * const rec = { imgId: 7, file: "a.jpg", width: 10, height: 10, boxes: new Float64Array([1, 2, 4, 6]),
 *   labels: new Int32Array([80]), iscrowd: new Uint8Array([0]) };
 * const j = cocoJson([rec], cocoClassMap());
 * assertEquals(j.annotations[0], { id: 1, image_id: 7, category_id: 90, bbox: [1, 2, 3, 4], area: 12, iscrowd: 0 });
 * ```
 */
export function cocoJson(
  records: DetectionRecord[],
  classMap: ClassMap,
  options: CocoWriteOptions = {},
):
  & { images: Record<string, unknown>[]; annotations: Record<string, unknown>[]; categories: CocoCategory[] }
  & Record<string, unknown> {
  const images: Record<string, unknown>[] = [];
  const annotations: Record<string, unknown>[] = [];
  let nextId = 1;
  for (const r of records) {
    const ex = (r.extra ?? {}) as {
      image?: Record<string, unknown>;
      annotations?: Record<string, unknown>[];
      file_name?: string;
    };
    images.push(
      ex.image ?? { id: r.imgId, file_name: ex.file_name ?? path.basename(r.file), width: r.width, height: r.height },
    );
    if (ex.annotations && ex.annotations.length === r.labels.length) {
      annotations.push(...ex.annotations);
      continue;
    }
    for (let i = 0; i < r.labels.length; i++) {
      const [x1, y1, x2, y2] = r.boxes.subarray(i * 4, i * 4 + 4);
      const w = x2 - x1, h = y2 - y1;
      annotations.push({
        id: nextId++,
        image_id: r.imgId,
        category_id: classMap.categoryIds[r.labels[i]] ?? r.labels[i],
        bbox: [x1, y1, w, h],
        area: w * h,
        iscrowd: r.iscrowd[i] ?? 0,
      });
    }
  }
  const categories = options.categories ??
    classMap.names.slice(1).map((name, i) => ({ id: classMap.categoryIds[i + 1], name, supercategory: "none" }));
  return { ...(options.top ?? {}), images, annotations, categories };
}

/** Writes {@linkcode cocoJson} to `file` atomically. */
export async function writeCoco(
  file: string,
  records: DetectionRecord[],
  classMap: ClassMap,
  options: CocoWriteOptions = {},
): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(cocoJson(records, classMap, options)) + "\n");
}
