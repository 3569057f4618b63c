/**
 * Loads a split named by a run config (COCO json + images, or MindRecord)
 * into records and class names, and builds COCO ground truth for scoring.
 *
 * @module
 */
import * as fs from "node:fs";
import type { CocoGroundTruthJson } from "./coco_eval.ts";
import { readCoco } from "./coco_reader.ts";
import type { DetectionRecord } from "./detection_record.ts";
import { InputError } from "./errors.ts";
import { readDetectionRecords } from "./mindrecord.ts";
import type { SplitConfig } from "./ssd_config.ts";

/** A loaded split. */
export interface LoadedSplit {
  records: DetectionRecord[];
  /** Class names, background first, when the source names them (COCO); else null. */
  classNames: string[] | null;
  /** COCO ground truth as scored: the source json when it is COCO, else built from the records. */
  groundTruth: () => CocoGroundTruthJson;
  /** Dropped or clipped items, when the policy allowed them. */
  report: string;
}

/** Reads a split. */
export function loadSplit(
  split: SplitConfig,
  o: { policy?: "error" | "clip" | "drop"; which?: string } = {},
): LoadedSplit {
  if (!split.path) throw new InputError(`data.${o.which ?? "train"}.path is not set`);
  if (!fs.existsSync(split.path)) throw new InputError("no such file", { file: split.path });
  if (split.format === "coco") {
    if (!split.images) {
      throw new InputError(`data.${o.which ?? "train"}.images is not set (COCO needs an image folder)`);
    }
    const ds = readCoco(split.path, { images: split.images, policy: o.policy ?? "error" });
    const records = split.limit ? ds.records.slice(0, split.limit) : ds.records;
    const keep = new Set(records.map((r) => r.imgId));
    return {
      records,
      classNames: ds.classMap.names,
      groundTruth: () => {
        const j = JSON.parse(fs.readFileSync(split.path!, "utf8")) as CocoGroundTruthJson;
        if (split.limit) {
          j.images = j.images.filter((im) => keep.has(Number(im.id)));
          j.annotations = j.annotations.filter((a) => keep.has(Number(a.image_id)));
        }
        return j;
      },
      report: "",
    };
  }
  const all = readDetectionRecords(split.path, { policy: o.policy });
  const records = split.limit ? all.slice(0, split.limit) : all;
  return { records, classNames: null, groundTruth: () => groundTruthFromRecords(records, null), report: "" };
}

/**
 * COCO ground truth from records: one category per label (id = label), area
 * = box area (the records carry no segmentation area).
 */
export function groundTruthFromRecords(records: DetectionRecord[], classNames: string[] | null): CocoGroundTruthJson {
  const maxLabel = Math.max(0, ...records.flatMap((r) => Array.from(r.labels)));
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
