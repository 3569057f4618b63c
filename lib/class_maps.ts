/**
 * Class maps: class name <-> contiguous label (0 = background, 1..C objects).
 * COCO's 80 classes follow the tutorial's `train_cls` list (labels are its
 * indices; COCO category ids 1..90 with gaps map onto them by name, as the
 * ModelZoo's create_coco_label does); Pascal VOC's 20 classes follow the
 * ModelZoo VOC config; custom lists come from a YAML file.
 *
 * @module
 */
import * as fs from "node:fs";
import YAML from "yaml";
import { InputError } from "./errors.ts";

/** A class map. `names[0]` is always "background". */
export interface ClassMap {
  /** Map name ("coco", "voc", or the file it was read from). */
  source: string;
  /** Label -> class name; index 0 is "background". */
  names: string[];
  /** Label -> COCO category id written to COCO json (index 0 unused). */
  categoryIds: number[];
}

/** The tutorial's `train_cls` (MindSpore SSD tutorial, "Data Preparation and Processing"). */
export const COCO_TRAIN_CLS: readonly string[] = [
  "background",
  "person",
  "bicycle",
  "car",
  "motorcycle",
  "airplane",
  "bus",
  "train",
  "truck",
  "boat",
  "traffic light",
  "fire hydrant",
  "stop sign",
  "parking meter",
  "bench",
  "bird",
  "cat",
  "dog",
  "horse",
  "sheep",
  "cow",
  "elephant",
  "bear",
  "zebra",
  "giraffe",
  "backpack",
  "umbrella",
  "handbag",
  "tie",
  "suitcase",
  "frisbee",
  "skis",
  "snowboard",
  "sports ball",
  "kite",
  "baseball bat",
  "baseball glove",
  "skateboard",
  "surfboard",
  "tennis racket",
  "bottle",
  "wine glass",
  "cup",
  "fork",
  "knife",
  "spoon",
  "bowl",
  "banana",
  "apple",
  "sandwich",
  "orange",
  "broccoli",
  "carrot",
  "hot dog",
  "pizza",
  "donut",
  "cake",
  "chair",
  "couch",
  "potted plant",
  "bed",
  "dining table",
  "toilet",
  "tv",
  "laptop",
  "mouse",
  "remote",
  "keyboard",
  "cell phone",
  "microwave",
  "oven",
  "toaster",
  "sink",
  "refrigerator",
  "book",
  "clock",
  "vase",
  "scissors",
  "teddy bear",
  "hair drier",
  "toothbrush",
]; // deno-fmt-ignore

/** COCO 2017 category ids of {@linkcode COCO_TRAIN_CLS} (index 0 unused), from instances_*.json "categories". */
export const COCO_CATEGORY_IDS: readonly number[] = [
  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35,
  36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
  67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
]; // deno-fmt-ignore

/** Pascal VOC's classes as the ModelZoo VOC config lists them (background first). */
export const VOC_CLASSES: readonly string[] = [
  "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
  "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]; // deno-fmt-ignore

/**
 * The COCO 80-class map of the tutorial.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const m = cocoClassMap();
 * assertEquals([m.names.length, labelOf(m, "person"), labelOf(m, "toothbrush"), m.categoryIds[80]], [81, 1, 80, 90]);
 * ```
 */
export function cocoClassMap(): ClassMap {
  return { source: "coco", names: [...COCO_TRAIN_CLS], categoryIds: [...COCO_CATEGORY_IDS] };
}

/** The Pascal VOC 20-class map (labels 1..20; category ids = labels, as the ModelZoo's VOC json). */
export function vocClassMap(): ClassMap {
  return { source: "voc", names: [...VOC_CLASSES], categoryIds: VOC_CLASSES.map((_, i) => i) };
}

/**
 * A map from a list of object class names (background is added in front when
 * missing); category ids are the labels unless given.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals(classMapFromNames(["cat", "dog"]).names, ["background", "cat", "dog"]);
 * ```
 */
export function classMapFromNames(names: string[], source = "custom", categoryIds?: number[]): ClassMap {
  const list = names[0] === "background" ? names.slice() : ["background", ...names];
  const seen = new Set<string>();
  for (const n of list) {
    if (typeof n !== "string" || n === "") {
      throw new InputError(`class names must be non-empty strings`, { file: source });
    }
    if (seen.has(n)) throw new InputError(`class "${n}" is listed twice`, { file: source });
    seen.add(n);
  }
  const ids = categoryIds ? [0, ...categoryIds] : list.map((_, i) => i);
  if (ids.length !== list.length) throw new InputError(`category ids do not match the class list`, { file: source });
  return { source, names: list, categoryIds: ids };
}

/**
 * Loads a class map: "coco", "voc", a COCO json (its `categories`, by id), or a
 * YAML file holding `classes: [name, ...]` (optionally `category_ids: [id, ...]`
 * of the same length).
 */
export function loadClassMap(spec: string): ClassMap {
  if (spec === "coco") return cocoClassMap();
  if (spec === "voc") return vocClassMap();
  if (spec.toLowerCase().endsWith(".json")) {
    let cats: unknown;
    try {
      cats = JSON.parse(fs.readFileSync(spec, "utf8")).categories;
    } catch (e) {
      throw new InputError(`cannot read categories (${(e as Error).message})`, { file: spec });
    }
    const ok = Array.isArray(cats) &&
      cats.every((c) => c && typeof c.name === "string" && Number.isInteger(c.id));
    if (!ok) throw new InputError(`expected "categories": [{id, name}, ...]`, { file: spec, where: "categories" });
    const sorted = [...(cats as { id: number; name: string }[])].sort((a, b) => a.id - b.id);
    return classMapFromNames(sorted.map((c) => c.name), spec, sorted.map((c) => c.id));
  }
  let raw: unknown;
  try {
    raw = YAML.parse(fs.readFileSync(spec, "utf8"));
  } catch (e) {
    throw new InputError(`cannot read class list (${(e as Error).message})`, { file: spec });
  }
  const o = raw as { classes?: unknown; category_ids?: unknown } | null;
  if (!o || !Array.isArray(o.classes) || o.classes.some((c) => typeof c !== "string")) {
    throw new InputError(`expected "classes: [name, ...]"`, { file: spec, where: "classes" });
  }
  const extra = Object.keys(o).filter((k) => k !== "classes" && k !== "category_ids");
  if (extra.length > 0) throw new InputError(`unknown key "${extra[0]}"`, { file: spec, where: extra[0] });
  let ids: number[] | undefined;
  if (o.category_ids !== undefined) {
    if (!Array.isArray(o.category_ids) || o.category_ids.some((x) => !Number.isInteger(x))) {
      throw new InputError(`category_ids must be a list of integers`, { file: spec, where: "category_ids" });
    }
    ids = o.category_ids as number[];
  }
  const names = o.classes as string[];
  return classMapFromNames(names, spec, ids && names[0] === "background" ? ids.slice(1) : ids);
}

/** The label of a class name, or -1 when the map does not hold it. */
export function labelOf(map: ClassMap, name: string): number {
  const i = map.names.indexOf(name);
  return i > 0 ? i : -1;
}
