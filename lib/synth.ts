/**
 * The embedded default dataset: coloured shapes (rectangle, ellipse,
 * triangle) on noisy, textured backgrounds, written as JPEG images plus COCO
 * instances json. Deterministic by seed, so two runs give identical bytes.
 *
 * @module
 */
import * as path from "node:path";
import sharp from "sharp";
import type { Spec } from "./config.ts";
import { drawBoxes, imageGrid } from "./draw.ts";
import { writeFileAtomic } from "./fs_atomic.ts";
import { Progress } from "./progress.ts";
import { createRng, randInt, type Rng, uniform } from "./rng.ts";

/** Settings of the synthetic dataset (configs/synth.yaml). */
export interface SynthConfig {
  image_size: number;
  splits: { train: number; val: number };
  classes: string[];
  objects_per_image: [number, number];
  object_side: [number, number];
  aspect_ratio: [number, number];
  min_visible: number;
  max_covered: number;
  /** HSL lightness gap between object fill and background tint (0: none). */
  min_contrast?: number;
  jpeg_quality: number;
}

const range = (min: number, doc: string, int = false): Spec => ({
  type: "array",
  items: { type: "number", min, int },
  minLength: 2,
  doc,
});

/** Schema of {@linkcode SynthConfig}. */
export const synthSpec: Spec = {
  type: "object",
  fields: {
    image_size: { type: "number", int: true, min: 32 },
    splits: {
      type: "object",
      fields: { train: { type: "number", int: true, min: 0 }, val: { type: "number", int: true, min: 0 } },
    },
    classes: { type: "array", items: { type: "string" }, minLength: 1 },
    objects_per_image: range(0, "inclusive range", true),
    object_side: range(0, "fraction of the image side"),
    aspect_ratio: range(0, "width / height"),
    min_visible: { type: "number", min: 0, max: 1 },
    max_covered: { type: "number", min: 0, max: 1 },
    min_contrast: { type: "number", min: 0, max: 40, default: 0 },
    jpeg_quality: { type: "number", int: true, min: 1, max: 100 },
  },
};

/** One drawn object. */
export interface SynthObject {
  /** Index into the class list (0-based). */
  cls: number;
  /** Full (unclipped) box in pixels: x1, y1, x2, y2. */
  full: [number, number, number, number];
  /** Box clipped to the image: x1, y1, x2, y2. */
  box: [number, number, number, number];
  /** SVG element drawing it. */
  svg: string;
}

/** A scene: the SVG to render and its ground truth. */
export interface SynthScene {
  svg: string;
  objects: SynthObject[];
}

const round2 = (v: number) => Math.round(v * 100) / 100;

function colour(rng: Rng, sat: [number, number], light: [number, number]): string {
  const h = Math.floor(uniform(rng, 0, 360));
  const s = Math.floor(uniform(rng, sat[0], sat[1]));
  const l = Math.floor(uniform(rng, light[0], light[1]));
  return `hsl(${h},${s}%,${l}%)`;
}

/** A lightness at least `gap` away from `avoid` (so an object never vanishes into its background). */
function contrastingLightness(rng: Rng, avoid: number, gap: number): [number, number] {
  const low = avoid - gap, high = avoid + gap;
  const span = Math.max(0, low - 10) + Math.max(0, 90 - high);
  let l = 10 + rng() * span;
  if (l > low) l += high - Math.max(10, low);
  const li = Math.min(90, Math.max(10, Math.floor(l)));
  return [li, li + 1];
}

function overlapShare(a: number[], b: number[]): number {
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  return (w * h) / Math.max(1e-9, (b[2] - b[0]) * (b[3] - b[1]));
}

/** The background: fractal noise in a random tint, plus a few faint stripes. Returns its SVG and lightness. */
function background(rng: Rng, size: number): { svg: string; lightness: number } {
  const seed = randInt(rng, 1, 100000);
  const freq = uniform(rng, 0.02, 0.12).toFixed(3);
  const lightness = Math.floor(uniform(rng, 25, 75));
  const tint = colour(rng, [0, 60], [lightness, lightness + 1]);
  const parts = [
    `<defs><filter id="n" x="0" y="0" width="100%" height="100%">`,
    `<feTurbulence type="fractalNoise" baseFrequency="${freq}" numOctaves="3" seed="${seed}"/>`,
    `<feColorMatrix type="saturate" values="${uniform(rng, 0, 0.6).toFixed(2)}"/></filter></defs>`,
    `<rect width="${size}" height="${size}" fill="${tint}"/>`,
    `<rect width="${size}" height="${size}" filter="url(#n)" opacity="${uniform(rng, 0.35, 0.7).toFixed(2)}"/>`,
  ];
  for (let i = randInt(rng, 2, 6); i > 0; i--) {
    const x1 = uniform(rng, 0, size), y1 = uniform(rng, 0, size);
    const x2 = uniform(rng, 0, size), y2 = uniform(rng, 0, size);
    parts.push(
      `<line x1="${x1.toFixed(1)}" y1="${y1.toFixed(1)}" x2="${x2.toFixed(1)}" y2="${y2.toFixed(1)}" ` +
        `stroke="${colour(rng, [0, 80], [20, 80])}" stroke-width="${uniform(rng, 1, 4).toFixed(1)}" opacity="0.35"/>`,
    );
  }
  return { svg: parts.join(""), lightness };
}

function shapeSvg(cls: string, b: number[], fill: string, stroke: string, rng: Rng): string {
  const [x1, y1] = b.map((v) => v.toFixed(2));
  const w = b[2] - b[0], h = b[3] - b[1];
  const common = `fill="${fill}" stroke="${stroke}" stroke-width="1"`;
  if (cls === "rectangle") {
    // Slightly rounded corners at most, so a small rectangle never passes for an ellipse.
    const r = (uniform(rng, 0, 0.05) * Math.min(w, h)).toFixed(2);
    return `<rect x="${x1}" y="${y1}" width="${w.toFixed(2)}" height="${h.toFixed(2)}" rx="${r}" ${common}/>`;
  }
  if (cls === "ellipse") {
    return `<ellipse cx="${((b[0] + b[2]) / 2).toFixed(2)}" cy="${((b[1] + b[3]) / 2).toFixed(2)}" ` +
      `rx="${(w / 2).toFixed(2)}" ry="${(h / 2).toFixed(2)}" ${common}/>`;
  }
  // Triangle: the apex touches one side of the box, the base spans the opposite side.
  const t = uniform(rng, 0, 1);
  const side = randInt(rng, 0, 3);
  const pts = side === 0
    ? [[b[0] + t * w, b[1]], [b[0], b[3]], [b[2], b[3]]]
    : side === 1
    ? [[b[0] + t * w, b[3]], [b[0], b[1]], [b[2], b[1]]]
    : side === 2
    ? [[b[0], b[1] + t * h], [b[2], b[1]], [b[2], b[3]]]
    : [[b[2], b[1] + t * h], [b[0], b[1]], [b[0], b[3]]];
  return `<polygon points="${pts.map((p) => p.map((v) => v.toFixed(2)).join(",")).join(" ")}" ${common}/>`;
}

/**
 * Builds one random scene. Pure: the same generator state gives the same scene.
 *
 * @example
 * ```ts
 * import { createRng } from "./rng.ts";
 * const cfg = { image_size: 100, splits: { train: 1, val: 1 }, classes: ["rectangle", "ellipse", "triangle"],
 *   objects_per_image: [1, 6], object_side: [0.08, 0.6], aspect_ratio: [0.5, 2], min_visible: 0.5,
 *   max_covered: 0.5, min_contrast: 20, jpeg_quality: 90 } as const;
 * const scene = makeScene(createRng(1), { ...cfg, classes: [...cfg.classes], objects_per_image: [1, 6],
 *   object_side: [0.08, 0.6], aspect_ratio: [0.5, 2] });
 * if (scene.objects.length < 1 || scene.objects.length > 6) throw new Error("object count out of range");
 * ```
 */
export function makeScene(rng: Rng, cfg: SynthConfig): SynthScene {
  const size = cfg.image_size;
  const bg = background(rng, size);
  const want = randInt(rng, cfg.objects_per_image[0], cfg.objects_per_image[1]);
  const objects: SynthObject[] = [];
  for (let tries = 0; objects.length < want && tries < want * 30; tries++) {
    const side = uniform(rng, cfg.object_side[0], cfg.object_side[1]) * size;
    const ar = Math.exp(uniform(rng, Math.log(cfg.aspect_ratio[0]), Math.log(cfg.aspect_ratio[1])));
    // side is the geometric mean of width and height, so both stay near the allowed range.
    const w = Math.min(size * cfg.object_side[1], Math.max(size * cfg.object_side[0], side * Math.sqrt(ar)));
    const h = Math.min(size * cfg.object_side[1], Math.max(size * cfg.object_side[0], side / Math.sqrt(ar)));
    const x1 = uniform(rng, -w / 2, size - w / 2), y1 = uniform(rng, -h / 2, size - h / 2);
    const full: [number, number, number, number] = [x1, y1, x1 + w, y1 + h].map(round2) as [
      number,
      number,
      number,
      number,
    ];
    const box = full.map((v) => Math.min(size, Math.max(0, v))) as [number, number, number, number];
    const visible = ((box[2] - box[0]) * (box[3] - box[1])) / (w * h);
    if (visible < cfg.min_visible) continue;
    if (objects.some((o) => overlapShare(full, o.box) > cfg.max_covered)) continue;
    const cls = randInt(rng, 0, cfg.classes.length - 1);
    const fill = colour(rng, [45, 100], contrastingLightness(rng, bg.lightness, cfg.min_contrast ?? 0));
    const stroke = colour(rng, [0, 100], [10, 90]);
    objects.push({ cls, full, box, svg: shapeSvg(cfg.classes[cls], full, fill, stroke, rng) });
  }
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}">` +
    bg.svg + objects.map((o) => o.svg).join("") + `</svg>`;
  return { svg, objects };
}

/** Renders a scene to JPEG bytes. */
export async function renderScene(scene: SynthScene, quality = 90): Promise<Uint8Array> {
  const jpg = await sharp(new TextEncoder().encode(scene.svg))
    .jpeg({ quality, chromaSubsampling: "4:4:4" })
    .toBuffer();
  return new Uint8Array(jpg);
}

/** A PNG grid of `count` random scenes with their ground-truth boxes drawn. */
export async function previewScenes(
  cfg: SynthConfig,
  options: { seed?: number; count?: number } = {},
): Promise<Uint8Array> {
  const rng = createRng(options.seed ?? 0);
  const pics: Uint8Array[] = [];
  for (let i = 0; i < (options.count ?? 8); i++) {
    const scene = makeScene(rng, cfg);
    const boxes = scene.objects.map((o) => ({ box: o.box, label: cfg.classes[o.cls], colour: o.cls + 1 }));
    pics.push(await drawBoxes(await renderScene(scene, cfg.jpeg_quality), boxes, { upscaleTo: 256 }));
  }
  return imageGrid(pics, { cols: 4, cell: 256 });
}

/** COCO instances json for a split. */
export interface CocoInstances {
  info: Record<string, unknown>;
  images: { id: number; file_name: string; width: number; height: number }[];
  annotations: {
    id: number;
    image_id: number;
    category_id: number;
    bbox: number[];
    area: number;
    iscrowd: number;
  }[];
  categories: { id: number; name: string; supercategory: string }[];
}

/** Per-split seeds derived from the run seed, so splits never share scenes. */
function splitSeed(seed: number, split: string): number {
  let h = seed >>> 0;
  for (const ch of split) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return h;
}

/**
 * Writes `outDir/images/{train,val}/*.jpg` and
 * `outDir/annotations/instances_{train,val}.json`. Files are written
 * atomically, so an interrupted run leaves no partial image; re-running
 * rewrites identical bytes.
 */
export async function writeSynthDataset(
  outDir: string,
  cfg: SynthConfig,
  options: { seed?: number; quiet?: boolean } = {},
): Promise<{ images: number; objects: number }> {
  const seed = options.seed ?? 0;
  let totalImages = 0, totalObjects = 0;
  for (const split of ["train", "val"] as const) {
    const n = cfg.splits[split];
    const rng = createRng(splitSeed(seed, split));
    const coco: CocoInstances = {
      info: { description: "ssd-workbench synthetic shapes", seed, split },
      images: [],
      annotations: [],
      categories: cfg.classes.map((name, i) => ({ id: i + 1, name, supercategory: "shape" })),
    };
    const scenes = Array.from({ length: n }, () => makeScene(rng, cfg));
    const bar = new Progress(`synth ${split}`, n, { unit: "img", quiet: options.quiet });
    const imgDir = path.join(outDir, "images", split);
    let next = 0;
    const worker = async () => {
      while (next < n) {
        const i = next++;
        const jpg = await renderScene(scenes[i], cfg.jpeg_quality);
        await writeFileAtomic(path.join(imgDir, `${String(i + 1).padStart(6, "0")}.jpg`), jpg);
        bar.tick();
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    bar.done();
    let annId = 1;
    scenes.forEach((scene, i) => {
      const id = i + 1;
      coco.images.push({
        id,
        file_name: `${String(id).padStart(6, "0")}.jpg`,
        width: cfg.image_size,
        height: cfg.image_size,
      });
      for (const o of scene.objects) {
        const [x1, y1, x2, y2] = o.box;
        const w = round2(x2 - x1), h = round2(y2 - y1);
        coco.annotations.push({
          id: annId++,
          image_id: id,
          category_id: o.cls + 1,
          bbox: [x1, y1, w, h],
          area: round2(w * h),
          iscrowd: 0,
        });
      }
    });
    await writeFileAtomic(
      path.join(outDir, "annotations", `instances_${split}.json`),
      JSON.stringify(coco) + "\n",
    );
    totalImages += n;
    totalObjects += coco.annotations.length;
  }
  return { images: totalImages, objects: totalObjects };
}
