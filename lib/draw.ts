/**
 * Pictures: boxes with class names and scores drawn over images through an
 * SVG composite in sharp, and grids of images for previews and reports.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import sharp from "sharp";

/** A box to draw, in pixels of the image it is drawn on. */
export interface DrawBox {
  /** x1, y1, x2, y2 in pixels. */
  box: [number, number, number, number] | number[];
  /** Text shown on the label tab, e.g. "ellipse 0.93". */
  label?: string;
  /** Index into the palette (usually the class). */
  colour?: number;
}

/** A palette of distinct, readable colours (Tableau 10). */
export const PALETTE = [
  "#4e79a7",
  "#f28e2b",
  "#e15759",
  "#76b7b2",
  "#59a14f",
  "#edc948",
  "#b07aa1",
  "#ff9da7",
  "#9c755f",
  "#bab0ac",
];

function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]!);
}

/**
 * The SVG overlay for `boxes` on a `width` x `height` image. Line width and
 * font size scale with the image so labels stay readable at a glance.
 *
 * @example
 * ```ts
 * const svg = boxesSvg(100, 80, [{ box: [10, 10, 50, 40], label: "cat 0.90", colour: 1 }]);
 * if (!svg.includes("cat 0.90")) throw new Error("label missing");
 * ```
 */
export function boxesSvg(width: number, height: number, boxes: DrawBox[]): string {
  const scale = Math.max(width, height);
  const stroke = Math.max(1.5, scale / 250);
  const font = Math.max(9, Math.round(scale / 32));
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">`];
  for (const b of boxes) {
    const c = PALETTE[(b.colour ?? 0) % PALETTE.length];
    const [x1, y1, x2, y2] = b.box;
    parts.push(
      `<rect x="${x1.toFixed(1)}" y="${y1.toFixed(1)}" width="${Math.max(0, x2 - x1).toFixed(1)}" ` +
        `height="${Math.max(0, y2 - y1).toFixed(1)}" fill="none" stroke="${c}" stroke-width="${stroke.toFixed(1)}"/>`,
    );
    if (b.label) {
      const tw = b.label.length * font * 0.6 + 4;
      const ty = y1 - font - 2 >= 0 ? y1 - font - 2 : y1;
      const tx = Math.min(Math.max(0, x1), Math.max(0, width - tw));
      parts.push(
        `<rect x="${tx.toFixed(1)}" y="${ty.toFixed(1)}" width="${tw.toFixed(1)}" height="${font + 2}" fill="${c}"/>`,
        `<text x="${(tx + 2).toFixed(1)}" y="${(ty + font - 1).toFixed(1)}" font-family="DejaVu Sans, sans-serif" ` +
          `font-size="${font}" fill="#ffffff">${escapeXml(b.label)}</text>`,
      );
    }
  }
  parts.push("</svg>");
  return parts.join("");
}

/**
 * Draws boxes over an encoded image (JPEG/PNG bytes) and returns the encoded
 * result (`format` jpeg by default).
 */
export async function drawBoxes(
  image: Uint8Array,
  boxes: DrawBox[],
  options: { format?: "jpeg" | "png"; upscaleTo?: number } = {},
): Promise<Uint8Array> {
  let img = sharp(image);
  const meta = await img.metadata();
  let w = meta.width!, h = meta.height!;
  let drawn = boxes;
  // Small images are enlarged first so that labels stay legible.
  if (options.upscaleTo && Math.max(w, h) < options.upscaleTo) {
    const s = options.upscaleTo / Math.max(w, h);
    const nw = Math.round(w * s), nh = Math.round(h * s);
    img = sharp(await img.resize(nw, nh, { kernel: "nearest" }).toBuffer());
    drawn = boxes.map((b) => ({ ...b, box: b.box.map((v) => v * s) }));
    [w, h] = [nw, nh];
  }
  const overlay = Buffer.from(boxesSvg(w, h, drawn));
  const out = img.composite([{ input: overlay, top: 0, left: 0 }]);
  return new Uint8Array(
    options.format === "png" ? await out.png().toBuffer() : await out.jpeg({ quality: 90 }).toBuffer(),
  );
}

/**
 * Lays encoded images out in a grid of `cols` columns with a small gap, each
 * cell `cell` pixels square (images are fitted inside), and returns a PNG.
 */
export async function imageGrid(
  images: Uint8Array[],
  options: { cols?: number; cell?: number; gap?: number; background?: string } = {},
): Promise<Uint8Array> {
  const cols = options.cols ?? Math.ceil(Math.sqrt(images.length));
  const cell = options.cell ?? 256, gap = options.gap ?? 4;
  const rows = Math.ceil(images.length / cols);
  const tiles = await Promise.all(
    images.map((im) => sharp(im).resize(cell, cell, { fit: "contain", background: "#202020" }).png().toBuffer()),
  );
  const out = sharp({
    create: {
      width: cols * cell + (cols + 1) * gap,
      height: rows * cell + (rows + 1) * gap,
      channels: 3,
      background: options.background ?? "#ffffff",
    },
  }).composite(tiles.map((t, i) => ({
    input: t,
    left: gap + (i % cols) * (cell + gap),
    top: gap + Math.floor(i / cols) * (cell + gap),
  })));
  return new Uint8Array(await out.png().toBuffer());
}
