/**
 * Loads a split named by a run config (COCO json + images, a VOC root, a
 * ModelZoo TXT file, or a MindRecord set) into records and class names, and
 * builds the COCO ground truth it is scored against.
 *
 * MindRecord sets are indexed, not loaded: each record keeps its boxes and
 * where its image bytes lie, and the loader reads them when the image is
 * decoded, so memory does not grow with the images (COCO train2017 is 19 GB).
 *
 * @module
 */
import * as fs from "node:fs";
import { type ClassMap, classMapFromNames, cocoClassMap, vocClassMap } from "./class_maps.ts";
import type { CocoGroundTruthJson } from "./coco_eval.ts";
import { readCoco } from "./coco_reader.ts";
import { formatReport } from "./input_policy.ts";
import { parseJsonText } from "./json_text.ts";
import type { DetectionRecord } from "./detection_record.ts";
import { InputError } from "./errors.ts";
import { iterDetectionRecords } from "./mindrecord_ssd.ts";
import { type DataConfig, resolveSplit, type SplitConfig } from "./ssd_config.ts";
import { readTxt } from "./txt_reader.ts";
import { readVoc } from "./voc_reader.ts";

/** A loaded split. */
export interface LoadedSplit {
  records: DetectionRecord[];
  /** Class names, background first: the config's when given, else the source's (COCO, VOC); null when unnamed. */
  classNames: string[] | null;
  /**
   * COCO ground truth as scored: the split's `annotations` json (restricted to the split's images, matched by id),
   * the source json of a COCO split, else built from the records.
   */
  groundTruth: () => CocoGroundTruthJson;
  /** Dropped or clipped items, when the policy allowed them. */
  report: string;
  /** The split as read, paths resolved against `data.root`. */
  split: SplitConfig;
}

/** Options of {@linkcode loadSplit}. */
export interface LoadSplitOptions {
  /**
   * Class names, background first (the config's `model.class_names`): labels are assigned by these names, and
   * MindRecord labels (ids only) must lie within them.
   */
  classNames?: string[] | null;
}

/**
 * Reads split `which` of a config's `data` section, with its paths resolved
 * against `data.root`.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const split = { format: "coco", path: "coco/instances.json", images: "coco/images", annotations: null, limit: null } as const;
 * const data = { root: "tests/fixtures", train: split, val: split, policy: "error" } as const;
 * const s = loadSplit(data, "val");
 * assertEquals([s.records.length > 0, s.split.path], [true, "tests/fixtures/coco/instances.json"]);
 * ```
 */
export function loadSplit(data: DataConfig, which: "train" | "val", o: LoadSplitOptions = {}): LoadedSplit {
  const split = resolveSplit(data[which], data.root);
  const key = `data.${which}`;
  const policy = data.policy;
  if (!split.path) throw new InputError(`${key}.path is not set`);
  if (!fs.existsSync(split.path)) {
    throw new InputError(`no such file or folder (${key}.path, relative paths resolve against data.root)`, {
      file: split.path,
    });
  }
  const names = o.classNames ?? null;
  const cut = (rs: DetectionRecord[]) => (split.limit ? rs.slice(0, split.limit) : rs);
  let records: DetectionRecord[], classNames: string[] | null, sourceGt: (() => CocoGroundTruthJson) | null = null;
  let report = "";
  switch (split.format) {
    case "coco": {
      if (!split.images) throw new InputError(`${key}.images is not set (COCO needs an image folder)`);
      const ds = readCoco(split.path, { images: split.images, policy, classes: names ? namedMap(names) : "auto" });
      records = cut(ds.records);
      classNames = ds.classMap.names;
      report = formatReport(ds.report);
      const file = split.path;
      sourceGt = () => restrictTo(readGroundTruth(file), records, file, false);
      break;
    }
    case "voc": {
      const ds = readVoc(split.path, {
        images: split.images ?? undefined,
        classes: names ? namedMap(names) : vocClassMap(),
        policy,
      });
      records = cut(ds.records);
      classNames = ds.classMap.names;
      report = formatReport(ds.report);
      break;
    }
    case "txt": {
      const classes = names ? namedMap(names) : cocoClassMap();
      const ds = readTxt(split.path, { images: split.images ?? undefined, classes, policy });
      records = cut(ds.records);
      classNames = classes.names;
      report = formatReport(ds.report);
      break;
    }
    case "mindrecord": {
      records = [];
      for (const r of iterDetectionRecords(split.path, { policy, lazyImages: true })) {
        if (split.limit && records.length >= split.limit) break;
        records.push(r);
      }
      classNames = names;
      if (names) checkLabels(records, names, split.path);
      break;
    }
  }
  const annotations = split.annotations;
  const groundTruth = annotations
    ? () => restrictTo(readGroundTruth(annotations), records, annotations, true)
    : sourceGt ?? (() => groundTruthFromRecords(records, classNames));
  return { records, classNames: names ?? classNames, groundTruth, report, split };
}

function namedMap(names: string[]): ClassMap {
  // Known COCO names keep COCO's category ids, so COCO output stays COCO.
  const coco = cocoClassMap();
  const objects = names[0] === "background" ? names.slice(1) : names;
  const ids = objects.map((n) => coco.categoryIds[coco.names.indexOf(n)]);
  return classMapFromNames(objects, "model.class_names", ids.every((id) => id > 0) ? ids : undefined);
}

/** Every label of `records` must name a class: 1..names.length - 1. */
function checkLabels(records: DetectionRecord[], names: string[], file: string): void {
  for (const r of records) {
    for (const l of r.labels) {
      if (!(l >= 1 && l < names.length)) {
        throw new InputError(
          `label ${l} has no name: model.class_names names labels 1..${names.length - 1} (${names.length - 1} classes)`,
          { file, where: `img_id ${r.imgId}` },
        );
      }
    }
  }
}

function readGroundTruth(file: string): CocoGroundTruthJson {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new InputError(`cannot read annotations (${(e as Error).message})`, { file });
  }
  const j = parseJsonText(text, file) as CocoGroundTruthJson;
  if (!j || typeof j !== "object" || !Array.isArray(j.images) || !Array.isArray(j.annotations)) {
    throw new InputError("not a COCO instances json (needs images and annotations lists)", { file });
  }
  if (!Array.isArray(j.categories)) throw new InputError("not a COCO instances json (no categories list)", { file });
  return j;
}

/**
 * The ground truth of the images in `records` (by image id), as the tutorial's
 * COCOMetrics sets `params.imgIds`. With `strict`, an image missing from the
 * json is an error naming it.
 */
function restrictTo(
  j: CocoGroundTruthJson,
  records: DetectionRecord[],
  file: string,
  strict: boolean,
): CocoGroundTruthJson {
  const keep = new Set(records.map((r) => r.imgId));
  const images = j.images.filter((im) => keep.has(Number(im.id)));
  if (strict && images.length !== keep.size) {
    const have = new Set(images.map((im) => Number(im.id)));
    const missing = [...keep].filter((id) => !have.has(id));
    throw new InputError(
      `${missing.length} evaluated image id(s) are not in the annotations json, e.g. img_id ${missing[0]}`,
      { file },
    );
  }
  if (images.length === j.images.length) return j;
  return { ...j, images, annotations: j.annotations.filter((a) => keep.has(Number(a.image_id))) };
}

/**
 * COCO ground truth from records: one category per label (id = label), area
 * = box area (the records carry no segmentation area).
 */
export function groundTruthFromRecords(records: DetectionRecord[], classNames: string[] | null): CocoGroundTruthJson {
  let maxLabel = 0;
  for (const r of records) for (const l of r.labels) maxLabel = Math.max(maxLabel, l);
  const n = classNames ? classNames.length - 1 : maxLabel;
  const images = records.map((r) => ({ id: r.imgId, file_name: r.file, width: r.width, height: r.height }));
  const annotations = [];
  let id = 1;
  for (const r of records) {
    for (let k = 0; k < r.labels.length; k++) {
      const [x1, y1, x2, y2] = r.boxes.subarray(4 * k, 4 * k + 4);
      annotations.push({
        id: id++,
        image_id: r.imgId,
        category_id: r.labels[k],
        bbox: [x1, y1, x2 - x1, y2 - y1],
        area: (x2 - x1) * (y2 - y1),
        iscrowd: r.iscrowd[k] ?? 0,
      });
    }
  }
  const categories = Array.from({ length: n }, (_, i) => ({ id: i + 1, name: classNames?.[i + 1] ?? `class${i + 1}` }));
  return { images, annotations, categories } as unknown as CocoGroundTruthJson;
}
