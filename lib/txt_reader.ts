/**
 * The ModelZoo's own-dataset TXT format: one image per line,
 * `relative/path.jpg x1,y1,x2,y2,cls x1,y1,x2,y2,cls ...` (space separated,
 * integer pixels, cls = contiguous label 1..C), images relative to an image
 * folder (ModelZoo filter_valid_data / anno_parser). The image id is the
 * 0-based line number, as there.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { DetectionRecord } from "./detection_record.ts";
import { InputError } from "./errors.ts";
import { type ClassMap, cocoClassMap } from "./class_maps.ts";
import { imageSize } from "./image_header.ts";
import { checkBox, newReport, type Policy, type PolicyReport, rejectItem } from "./input_policy.ts";

/** One parsed line: the image path and its [x1, y1, x2, y2, cls] boxes. */
export interface TxtLine {
  /** 1-based line number. */
  line: number;
  path: string;
  boxes: [number, number, number, number, number][];
}

/**
 * Parses the text of a TXT annotation file. Blank lines are skipped; any other
 * malformed line is an {@linkcode InputError} naming the file and line.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const [l] = parseTxtLines("train2017/0000001.jpg 0,259,401,459,7 35,28,324,201,2\n", "a.txt");
 * assertEquals([l.line, l.path, l.boxes[1]], [1, "train2017/0000001.jpg", [35, 28, 324, 201, 2]]);
 * ```
 */
export function parseTxtLines(text: string, file: string): TxtLine[] {
  const out: TxtLine[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const where = `line ${i + 1}`;
    const s = raw.trim();
    if (s === "") return;
    const parts = s.split(/[ \t]+/);
    const p = parts[0];
    if (/^-?\d+(,-?\d+){4}$/.test(p)) {
      throw new InputError("line starts with a box; expected the image path first", { file, where });
    }
    const boxes: TxtLine["boxes"] = [];
    for (const [k, b] of parts.slice(1).entries()) {
      const nums = b.split(",");
      if (nums.length !== 5 || nums.some((x) => !/^[-+]?\d+$/.test(x))) {
        throw new InputError(`box ${k + 1} ${JSON.stringify(b)} is not x1,y1,x2,y2,cls integers`, { file, where });
      }
      const v = nums.map(Number);
      if (v.some((x) => !Number.isSafeInteger(x))) {
        throw new InputError(`box ${k + 1} has an out-of-range number`, { file, where });
      }
      boxes.push(v as TxtLine["boxes"][number]);
    }
    out.push({ line: i + 1, path: p, boxes });
  });
  return out;
}

/** Options for {@linkcode readTxt}. */
export interface TxtReadOptions {
  /** Folder image paths are relative to (ModelZoo IMAGE_DIR); default the TXT file's folder. */
  images?: string;
  /** The class map the labels index (default COCO's 80: labels 1..80). */
  classes?: ClassMap;
  policy?: Policy;
  readImages?: boolean;
}

/** Reads the image header bytes of `file` (first 256 KiB) for its size. */
function sizeOfImage(file: string): { width: number; height: number } | null {
  const fd = fs.openSync(file, "r");
  try {
    const b = new Uint8Array(Math.min(256 << 10, fs.fstatSync(fd).size));
    fs.readSync(fd, b, 0, b.length, 0);
    return imageSize(b);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Reads a TXT annotation file into records. Image sizes come from the image
 * headers (JPEG/PNG), so boxes can be checked against them; labels must be in
 * 1..C of the class map. Problems follow the policy.
 */
export function readTxt(
  file: string,
  options: TxtReadOptions = {},
): { records: DetectionRecord[]; report: PolicyReport } {
  const policy = options.policy ?? "error";
  const classes = options.classes ?? cocoClassMap();
  const report = newReport();
  const imagesDir = options.images ?? path.dirname(file);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new InputError(`cannot read (${(e as Error).message})`, { file });
  }
  const records: DetectionRecord[] = [];
  for (const l of parseTxtLines(text, file)) {
    const where = `line ${l.line}`;
    const imgPath = path.join(imagesDir, l.path);
    if (!fs.existsSync(imgPath) || !fs.statSync(imgPath).isFile()) {
      rejectItem(policy, report, "image", `image file ${imgPath} is missing`, file, where);
      continue;
    }
    const size = sizeOfImage(imgPath);
    if (!size) {
      rejectItem(policy, report, "image", `image file ${imgPath} is not a readable JPEG or PNG`, file, where);
      continue;
    }
    const boxes: number[] = [], labels: number[] = [];
    for (const [k, b] of l.boxes.entries()) {
      const w = `${where}, box ${k + 1}`;
      const cls = b[4];
      if (cls < 1 || cls >= classes.names.length) {
        rejectItem(
          policy,
          report,
          "box",
          `class ${cls} is not a label 1..${classes.names.length - 1} (${classes.source})`,
          file,
          w,
        );
        continue;
      }
      const box = checkBox([b[0], b[1], b[2], b[3]], size.width, size.height, policy, report, file, w);
      if (!box) continue;
      boxes.push(...box);
      labels.push(cls);
    }
    records.push({
      imgId: l.line - 1,
      file: imgPath,
      width: size.width,
      height: size.height,
      boxes: Float64Array.from(boxes), // [N, 4]
      labels: Int32Array.from(labels), // [N]
      iscrowd: new Uint8Array(labels.length), // [N]
      image: options.readImages ? Deno.readFileSync(imgPath) : undefined,
      extra: { file_name: l.path },
    });
  }
  return { records, report };
}

/**
 * Formats records as TXT lines (boxes rounded to integers, as the format holds).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const r = { imgId: 0, file: "/d/a.jpg", width: 9, height: 9, boxes: new Float64Array([1, 2, 3.4, 4.6]),
 *   labels: new Int32Array([3]), iscrowd: new Uint8Array(1), extra: { file_name: "a.jpg" } };
 * assertEquals(formatTxt([r]), "a.jpg 1,2,3,5,3\n");
 * ```
 */
export function formatTxt(records: DetectionRecord[]): string {
  return records.map((r) => {
    const name = (r.extra?.file_name as string | undefined) ?? path.basename(r.file);
    const parts = [name];
    for (let i = 0; i < r.labels.length; i++) {
      parts.push([...r.boxes.subarray(i * 4, i * 4 + 4)].map(Math.round).join(",") + "," + r.labels[i]);
    }
    return parts.join(" ") + "\n";
  }).join("");
}
