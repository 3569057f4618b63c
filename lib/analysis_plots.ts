/**
 * Pictures of an error analysis, as SVG rendered to PNG with sharp: the TIDE
 * summary (bars of each error type's dAP and a pie of their shares, as tidecv's
 * own summary plot shows them), a confusion matrix as a heat map, and grids of
 * precision-recall curves.
 *
 * @module
 */
import sharp from "sharp";
import { Buffer } from "node:buffer";
import { PALETTE } from "./draw.ts";

/**
 * tidecv's colours (`tidecv/plotting.py` `TidePlotter`: seaborn's "muted" palette, entries 9, 8, 2, 6, 4, 3) for the
 * main error types in Cls, Loc, Both, Dupe, Bkg, Miss order, and (entries 0, 1) for FalsePos, FalseNeg.
 */
export const TIDE_COLOURS = ["#82c6e2", "#d5bb67", "#6acc64", "#dc7ec0", "#956cb4", "#d65f5f"];
/** tidecv's colours of the special errors, FalsePos and FalseNeg. */
export const TIDE_SPECIAL_COLOURS = ["#4878d0", "#ee854a"];
/** tidecv fixes its bar scales so that models compare at a glance: main dAP up to 10, special up to 25. */
export const TIDE_SCALE = { main: 10, special: 25 };

function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]!);
}

/** Renders an SVG string to PNG bytes. */
export async function svgToPng(svg: string): Promise<Uint8Array> {
  return new Uint8Array(await sharp(Buffer.from(svg)).png().toBuffer());
}

/** One bar of {@linkcode barsSvg}. */
export interface Bar {
  label: string;
  value: number;
  colour?: string;
}

/**
 * Horizontal bars with their values, in an SVG group placed at (`x`, `y`) and
 * `width` wide: the scale runs from 0 to the largest value (or `max`).
 *
 * @example
 * ```ts
 * const g = barsSvg([{ label: "Cls", value: 2.5 }, { label: "Loc", value: 7 }], { x: 0, y: 0, width: 300 });
 * if (!g.includes(">7.00<")) throw new Error("value missing");
 * ```
 */
export function barsSvg(bars: Bar[], o: { x: number; y: number; width: number; title?: string; max?: number }): string {
  const rowH = 26, labelW = 80, valueW = 52;
  const max = o.max ?? Math.max(1e-9, ...bars.map((b) => b.value));
  const inner = o.width - labelW - valueW;
  const parts = [`<g transform="translate(${o.x} ${o.y})">`];
  let top = 0;
  if (o.title) {
    parts.push(`<text x="0" y="14" font-size="14" font-weight="bold">${escapeXml(o.title)}</text>`);
    top = 24;
  }
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    const w = Math.max(0, (b.value / max) * inner);
    parts.push(`<text x="${labelW - 8}" y="${y + 17}" font-size="13" text-anchor="end">${escapeXml(b.label)}</text>`);
    parts.push(
      `<rect x="${labelW}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" ` +
        `fill="${b.colour ?? PALETTE[i % PALETTE.length]}"/>`,
    );
    parts.push(`<text x="${labelW + w + 6}" y="${y + 17}" font-size="12">${b.value.toFixed(2)}</text>`);
  });
  parts.push("</g>");
  return parts.join("");
}

/**
 * A pie of `slices` (their shares of the total) centred at (`cx`, `cy`), with
 * a legend of percentages on its right.
 *
 * @example
 * ```ts
 * const g = pieSvg([{ label: "Cls", value: 1 }, { label: "Loc", value: 3 }], { cx: 60, cy: 60, r: 50 });
 * if (!g.includes("75.0%")) throw new Error("share missing");
 * ```
 */
export function pieSvg(slices: Bar[], o: { cx: number; cy: number; r: number }): string {
  const total = slices.reduce((a, s) => a + Math.max(0, s.value), 0);
  const parts = [];
  if (total <= 0) {
    parts.push(`<circle cx="${o.cx}" cy="${o.cy}" r="${o.r}" fill="#eeeeee"/>`);
  }
  let angle = -Math.PI / 2;
  slices.forEach((s, i) => {
    const share = total > 0 ? Math.max(0, s.value) / total : 0;
    const colour = s.colour ?? PALETTE[i % PALETTE.length];
    if (share >= 0.9999) parts.push(`<circle cx="${o.cx}" cy="${o.cy}" r="${o.r}" fill="${colour}"/>`);
    else if (share > 0) {
      const end = angle + share * 2 * Math.PI;
      const [x0, y0] = [o.cx + o.r * Math.cos(angle), o.cy + o.r * Math.sin(angle)];
      const [x1, y1] = [o.cx + o.r * Math.cos(end), o.cy + o.r * Math.sin(end)];
      parts.push(
        `<path d="M${o.cx},${o.cy} L${x0.toFixed(2)},${y0.toFixed(2)} A${o.r},${o.r} 0 ${share > 0.5 ? 1 : 0} 1 ` +
          `${x1.toFixed(2)},${y1.toFixed(2)} Z" fill="${colour}" stroke="#ffffff" stroke-width="1"/>`,
      );
      angle = end;
    }
    const ly = o.cy - o.r + 8 + i * 20;
    parts.push(`<rect x="${o.cx + o.r + 16}" y="${ly - 10}" width="12" height="12" fill="${colour}"/>`);
    parts.push(
      `<text x="${o.cx + o.r + 34}" y="${ly}" font-size="12">${escapeXml(s.label)} ${(100 * share).toFixed(1)}%</text>`,
    );
  });
  return parts.join("");
}

/** What {@linkcode tideSummaryPng} draws: tidecv's dAPs in percentage points. */
export interface TideSummary {
  ap50: number;
  main: Record<"Cls" | "Loc" | "Both" | "Dupe" | "Bkg" | "Miss", number>;
  special: Record<"FalsePos" | "FalseNeg", number>;
}

/**
 * tidecv's summary as one picture: the pie of the main errors' shares, the
 * bars of their dAP, and the bars of the special (false positive, false
 * negative) dAP, titled with the AP50 it breaks down.
 */
export function tideSummarySvg(t: TideSummary, title = "TIDE error breakdown"): string {
  const W = 860, H = 300;
  const main = (["Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"] as const).map((k, i) => ({
    label: k,
    value: t.main[k],
    colour: TIDE_COLOURS[i],
  }));
  const special = [
    { label: "FalsePos", value: t.special.FalsePos, colour: TIDE_SPECIAL_COLOURS[0] },
    { label: "FalseNeg", value: t.special.FalseNeg, colour: TIDE_SPECIAL_COLOURS[1] },
  ];
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="DejaVu Sans, sans-serif">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${W / 2}" y="22" font-size="16" text-anchor="middle">${escapeXml(title)}: AP50 ${
      t.ap50.toFixed(2)
    }, dAP by error type (percentage points)</text>`,
    pieSvg(main, { cx: 110, cy: 160, r: 90 }),
    barsSvg(main, { x: 330, y: 44, width: 260, title: "main dAP" }),
    barsSvg(special, {
      x: 610,
      y: 44,
      width: 230,
      title: "special dAP",
      max: Math.max(...special.map((s) => s.value), 1e-9),
    }),
    "</svg>",
  ].join("");
}

/** {@linkcode tideSummarySvg} as PNG. */
export function tideSummaryPng(t: TideSummary, title?: string): Promise<Uint8Array> {
  return svgToPng(tideSummarySvg(t, title));
}

/**
 * A confusion matrix as a heat map: rows are ground truth, columns
 * predictions (mmdetection's layout), each cell's count written in it and its
 * colour the count's share of its row.
 *
 * @example
 * ```ts
 * const svg = confusionSvg(["cat", "dog", "background"], [[5, 1, 2], [0, 7, 1], [3, 0, 0]]);
 * if (!svg.includes(">7<")) throw new Error("count missing");
 * ```
 */
export function confusionSvg(classes: string[], counts: number[][], title = "Confusion matrix"): string {
  const n = classes.length;
  const cell = Math.max(18, Math.min(48, Math.floor(720 / n)));
  const labelW = 110, top = 130;
  const W = Math.max(labelW + n * cell + 20, 420), H = top + n * cell + 40;
  const font = Math.max(8, Math.min(12, cell / 3));
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="DejaVu Sans, sans-serif">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${W / 2}" y="20" font-size="15" text-anchor="middle">${escapeXml(title)}</text>`,
    `<text x="${W / 2}" y="38" font-size="11" text-anchor="middle">rows: ground truth, columns: prediction</text>`,
  ];
  for (let j = 0; j < n; j++) {
    const x = labelW + j * cell + cell / 2;
    parts.push(
      `<text transform="translate(${x + 4} ${top - 6}) rotate(-60)" font-size="${font}">${
        escapeXml(classes[j])
      }</text>`,
    );
  }
  for (let i = 0; i < n; i++) {
    const y = top + i * cell;
    const rowSum = counts[i].reduce((a, b) => a + b, 0);
    parts.push(
      `<text x="${labelW - 6}" y="${y + cell / 2 + 4}" font-size="${font}" text-anchor="end">${
        escapeXml(classes[i])
      }</text>`,
    );
    for (let j = 0; j < n; j++) {
      const share = rowSum > 0 ? counts[i][j] / rowSum : 0;
      // White to a deep blue by the share of the row.
      const c = (v: number) => Math.round(255 - share * (255 - v));
      parts.push(
        `<rect x="${labelW + j * cell}" y="${y}" width="${cell}" height="${cell}" fill="rgb(${c(31)},${c(78)},${
          c(140)
        })" stroke="#dddddd"/>`,
      );
      if (counts[i][j] > 0) {
        parts.push(
          `<text x="${labelW + j * cell + cell / 2}" y="${y + cell / 2 + 4}" font-size="${font}" ` +
            `text-anchor="middle" fill="${share > 0.55 ? "#ffffff" : "#222222"}">${counts[i][j]}</text>`,
        );
      }
    }
  }
  parts.push("</svg>");
  return parts.join("");
}

/** {@linkcode confusionSvg} as PNG. */
export function confusionPng(classes: string[], counts: number[][], title?: string): Promise<Uint8Array> {
  return svgToPng(confusionSvg(classes, counts, title));
}

/**
 * Lays out equally sized PNG panels (plots) in a grid of `cols` columns on
 * white, without resizing them.
 */
export async function panelGrid(panels: Uint8Array[], cols = 2): Promise<Uint8Array> {
  if (panels.length === 0) throw new RangeError("panelGrid needs at least one panel");
  const { width = 1, height = 1 } = await sharp(panels[0]).metadata();
  const rows = Math.ceil(panels.length / cols);
  const out = sharp({
    create: { width: width * Math.min(cols, panels.length), height: height * rows, channels: 3, background: "#ffffff" },
  }).composite(
    panels.map((p, i) => ({ input: Buffer.from(p), left: (i % cols) * width, top: Math.floor(i / cols) * height })),
  );
  return new Uint8Array(await out.png().toBuffer());
}
