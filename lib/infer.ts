/**
 * The infer stage: run an exported ONNX model over images (a file, a folder or
 * a glob), write COCO-style `detections.json` and one annotated picture per
 * image. Pictures are written as they are made; detections.json is written
 * atomically at the end, so an interrupted run leaves no half file.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import type { DetectionRecord } from "./detection_record.ts";
import { preparedBatches } from "./data_loader.ts";
import { drawBoxes } from "./draw.ts";
import { InputError } from "./errors.ts";
import type { NamedDetection } from "./evaluate.ts";
import { toCocoResults } from "./evaluate.ts";
import { writeFileAtomic, writeJsonAtomic } from "./fs_atomic.ts";
import {
  detectionsOf,
  loadOnnxModel,
  type OnnxModel,
  type PreparedImage,
  prepareImage,
  runOnnx,
  type SessionOptions,
} from "./onnx_infer.ts";
import { Progress } from "./progress.ts";

/** File extensions taken from a folder. */
export const IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif"];

/**
 * The image files `input` names, sorted: the file itself, the images of a
 * folder (not recursive), or the matches of a glob (`*`, `?`, `**`).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const dir = Deno.makeTempDirSync();
 * for (const f of ["b.jpg", "a.png", "notes.txt"]) Deno.writeTextFileSync(`${dir}/${f}`, "");
 * assertEquals(listImages(dir).map((f) => f.slice(dir.length + 1)), ["a.png", "b.jpg"]);
 * assertEquals(listImages(`${dir}/*.jpg`).length, 1);
 * ```
 */
export function listImages(input: string): string[] {
  const isImage = (f: string) => IMAGE_EXTENSIONS.includes(path.extname(f).toLowerCase());
  if (/[*?[]/.test(input)) {
    const files = (fs.globSync(input) as string[]).filter((f) => isImage(f) && fs.statSync(f).isFile());
    if (files.length === 0) throw new InputError(`no image matches ${input}`);
    return files.sort();
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(input);
  } catch {
    throw new InputError("no such file or folder", { file: input });
  }
  if (st.isFile()) return [input];
  const files = fs.readdirSync(input).filter(isImage).map((f) => path.join(input, f))
    .filter((f) => fs.statSync(f).isFile()).sort();
  if (files.length === 0) {
    throw new InputError(`no images (${IMAGE_EXTENSIONS.join(", ")}) in the folder`, { file: input });
  }
  return files;
}

/** Image ids and category ids from a COCO instances file, matched by file name and class name. */
export interface GroundTruthIds {
  imageId: (fileName: string) => number | undefined;
  /** Category id of a class name, when the ground truth has it. */
  categoryId: (className: string) => number | undefined;
}

/** Reads `--gt`: file_name -> image id and category name -> id. */
export function readGroundTruthIds(file: string): GroundTruthIds {
  let j: { images?: { id: number; file_name?: string }[]; categories?: { id: number; name?: string }[] };
  try {
    j = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new InputError(`cannot read ground truth: ${(e as Error).message}`, { file });
  }
  if (!Array.isArray(j.images) || !Array.isArray(j.categories)) {
    throw new InputError("ground truth must be a COCO instances object with images and categories", { file });
  }
  const byName = new Map<string, number>();
  for (const im of j.images) if (im.file_name) byName.set(path.basename(im.file_name), Number(im.id));
  const cats = new Map<string, number>();
  for (const c of j.categories) if (c.name) cats.set(c.name, Number(c.id));
  return { imageId: (f) => byName.get(path.basename(f)), categoryId: (n) => cats.get(n) };
}

/** Options of {@linkcode inferImages}. */
export interface InferOptions extends SessionOptions {
  /** model.onnx, or a loaded model. */
  model: string | OnnxModel;
  /** config.yaml; default: the model's metadata. */
  config?: string;
  /** An image, a folder or a glob. */
  input: string;
  /** Output folder. */
  out: string;
  /** Overrides the config's score threshold. */
  minScore?: number;
  batchSize?: number;
  /** Report and skip images that cannot be read or decoded, instead of stopping. */
  skipBad?: boolean;
  /** COCO instances json giving image and category ids. */
  gt?: string;
  /** Write annotated pictures (default true). */
  draw?: boolean;
  /** Long side annotated pictures are enlarged to when smaller (default 480). */
  upscaleTo?: number;
  /** Progress bar options; `quiet` silences it. */
  quiet?: boolean;
  /** Where skip notices go (default stderr). */
  log?: (line: string) => void;
}

/** What {@linkcode inferImages} did. */
export interface InferSummary {
  images: number;
  detections: NamedDetection[];
  skipped: { file: string; error: string }[];
  detectionsFile: string;
  pictures: string[];
}

/** Output picture name for an image: its name with a .jpg extension, unique within the run. */
function pictureName(file: string, used: Set<string>): string {
  const base = path.basename(file);
  let name = `${base.slice(0, base.length - path.extname(base).length)}.jpg`;
  if (used.has(name)) name = `${base}.jpg`;
  for (let i = 2; used.has(name); i++) name = `${base}.${i}.jpg`;
  used.add(name);
  return name;
}

/** A record for an image file: its size comes from the header, so a broken file fails here, by name. */
async function recordOf(file: string, imgId: number): Promise<DetectionRecord & { image: Uint8Array }> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(file);
  } catch (e) {
    throw new InputError(`cannot read image: ${(e as Error).message}`, { file });
  }
  let meta: { width?: number; height?: number };
  try {
    meta = await sharp(bytes).metadata();
  } catch (e) {
    throw new InputError(`cannot decode image: ${(e as Error).message}`, { file });
  }
  if (!meta.width || !meta.height) throw new InputError("cannot decode image: no size in its header", { file });
  return {
    imgId,
    file,
    width: meta.width,
    height: meta.height,
    boxes: new Float64Array(0),
    labels: new Int32Array(0),
    iscrowd: new Uint8Array(0),
    image: bytes,
  };
}

/**
 * Runs an exported model over images: detections.json (COCO results with
 * `file_name`) and an annotated jpg per image in `out`.
 */
export async function inferImages(o: InferOptions): Promise<InferSummary> {
  const model = typeof o.model === "string" ? await loadOnnxModel(o.model, o) : o.model;
  const files = listImages(o.input);
  const gt = o.gt ? readGroundTruthIds(o.gt) : null;
  const names = model.config.class_names;
  const labelToCategory = (label: number): number => {
    if (!gt) return label;
    const id = gt.categoryId(names[label]);
    if (id === undefined) {
      throw new InputError(`class "${names[label]}" (label ${label}) is not a category of the ground truth`, {
        file: o.gt,
      });
    }
    return id;
  };
  // Check every name up front, so a mismatch fails before any work.
  if (gt) names.forEach((_, l) => l !== (model.postprocess.background_index ?? -1) && labelToCategory(l));
  const ids = files.map((f, i) => {
    if (!gt) return i + 1;
    const id = gt.imageId(f);
    if (id === undefined) throw new InputError(`not an image of the ground truth (no such file_name)`, { file: f });
    return id;
  });
  const log = o.log ?? ((s: string) => console.error(s));
  const bs = o.batchSize ?? 8, s = model.inputSize;
  await fs.promises.mkdir(o.out, { recursive: true });
  const bar = new Progress("infer", files.length, { unit: "img", quiet: o.quiet || files.length < 2 });
  const summary: InferSummary = {
    images: 0,
    detections: [],
    skipped: [],
    detectionsFile: path.join(o.out, "detections.json"),
    pictures: [],
  };
  const used = new Set<string>(["detections.jpg"]);

  type Loaded = {
    file: string;
    id: number;
    rec?: DetectionRecord & { image: Uint8Array };
    img?: PreparedImage;
    err?: Error;
  };
  const load = (batch: string[], from: number): Promise<Loaded[]> =>
    Promise.all(
      batch.map(async (file, k): Promise<Loaded> => {
        const id = ids[from + k];
        try {
          const rec = await recordOf(file, id);
          return { file, id, rec, img: await prepareImage(model, rec) };
        } catch (e) {
          if (!(e instanceof InputError)) throw e;
          return { file, id, err: e };
        }
      }),
    );
  for await (const { prepared: loaded } of preparedBatches(files, bs, load)) {
    const bad = loaded.filter((l) => l.err);
    for (const l of bad) {
      if (!o.skipBad) throw l.err;
      summary.skipped.push({ file: l.file, error: l.err!.message });
      log(`skipped ${l.err!.message}`);
    }
    const good = loaded.filter((l) => !l.err);
    if (good.length > 0) {
      const x = new Float32Array(good.length * s * s * 3);
      good.forEach((l, k) => x.set(l.img!.data, k * s * s * 3));
      const out = await runOnnx(model, x, good.length);
      // Pictures of a batch are drawn concurrently (sharp works off the main thread).
      const drawing: Promise<void>[] = [];
      for (const [k, l] of good.entries()) {
        const det = detectionsOf(model, out, k, l.img!.boxScale, o.minScore);
        summary.detections.push(...toCocoResults(det, l.id, path.basename(l.file), labelToCategory));
        summary.images++;
        if (o.draw ?? true) {
          const boxes = Array.from({ length: det.count }, (_, i) => {
            const [y1, x1, y2, x2] = det.boxes.subarray(4 * i, 4 * i + 4);
            return {
              box: [x1, y1, x2, y2],
              label: `${names[det.labels[i]] ?? det.labels[i]} ${det.scores[i].toFixed(2)}`,
              colour: det.labels[i],
            };
          });
          const pic = path.join(o.out, pictureName(l.file, used));
          summary.pictures.push(pic);
          drawing.push(
            drawBoxes(l.rec!.image, boxes, { upscaleTo: o.upscaleTo ?? 480 }).then((jpg) => writeFileAtomic(pic, jpg)),
          );
        }
      }
      await Promise.all(drawing);
    }
    bar.tick(loaded.length, `${summary.detections.length} det`);
  }
  bar.done();
  await writeJsonAtomic(summary.detectionsFile, summary.detections);
  return summary;
}
