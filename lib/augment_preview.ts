/**
 * A picture of what the network is trained on: augmented samples with their
 * boxes drawn, so a person can check that the boxes follow the pixels.
 *
 * @module
 */
import sharp from "sharp";
import { type AugmentConfig, augmentSample, denormalise } from "./augment.ts";
import type { DetectionRecord } from "./detection_record.ts";
import { drawBoxes, imageGrid } from "./draw.ts";
import { createRng } from "./rng.ts";

/**
 * A PNG grid: for each of `records` (cycled), `perRecord` augmented versions
 * at `size` px, each with its boxes and class names drawn.
 */
export async function augmentPreview(
  records: DetectionRecord[],
  classNames: string[],
  size: number,
  cfg: AugmentConfig,
  o: { seed?: number; count?: number; cols?: number } = {},
): Promise<Uint8Array> {
  const rng = createRng(o.seed ?? 0);
  const count = o.count ?? 16;
  const pics: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const rec = records[i % records.length];
    const sample = await augmentSample(rec, size, rng, cfg);
    const raw = denormalise(sample.image, cfg);
    const png = await sharp(raw, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
    const boxes = Array.from({ length: sample.labels.length }, (_, k) => {
      const [y1, x1, y2, x2] = sample.boxes.subarray(4 * k, 4 * k + 4);
      return {
        box: [x1 * size, y1 * size, x2 * size, y2 * size],
        label: classNames[sample.labels[k]] ?? `${sample.labels[k]}`,
        colour: sample.labels[k],
      };
    });
    pics.push(await drawBoxes(new Uint8Array(png), boxes, { upscaleTo: 256 }));
  }
  return imageGrid(pics, { cols: o.cols ?? 4, cell: 256 });
}
