/**
 * What the dataset readers (COCO json, Pascal VOC xml, ModelZoo TXT,
 * MindRecord) do with bad input: a box outside its image or degenerate, an
 * unknown class, a missing image. The policy is `error` (the default: stop,
 * naming the file and record), `clip` (repair the box) or `drop` (skip the
 * item); a report counts what was changed, with the first reasons.
 *
 * @module
 */
import { InputError } from "./errors.ts";

/** What to do with a bad box, unknown class or missing image: fail (default), clip the box, or drop the item. */
export type Policy = "error" | "clip" | "drop";

/** Counts of what a policy changed, with the first few reasons. */
export interface PolicyReport {
  clippedBoxes: number;
  droppedBoxes: number;
  droppedImages: number;
  /** Up to 20 messages naming file and record. */
  notes: string[];
}

/** A fresh, empty report. */
export function newReport(): PolicyReport {
  return { clippedBoxes: 0, droppedBoxes: 0, droppedImages: 0, notes: [] };
}

/** One line summarising a report, e.g. "clipped 2 boxes, dropped 1 box, dropped 0 images". */
export function formatReport(r: PolicyReport): string {
  const s = (n: number, w: string) => `${n} ${w}${n === 1 ? "" : "es".slice(w.endsWith("x") ? 0 : 1)}`;
  return `clipped ${s(r.clippedBoxes, "box")}, dropped ${s(r.droppedBoxes, "box")}, dropped ${r.droppedImages} image${
    r.droppedImages === 1 ? "" : "s"
  }`;
}

function note(r: PolicyReport, msg: string) {
  if (r.notes.length < 20) r.notes.push(msg);
}

/** Pixels a box may overshoot the image before it counts as outside (COCO's own polygons overshoot by fractions). */
export const BOX_TOLERANCE = 0.5;

/**
 * Checks one x1,y1,x2,y2 box against a W x H image under `policy`. Returns the
 * box (clipped under `clip`) or null when it is dropped; throws an
 * {@linkcode InputError} naming `file` and `where` under `error`.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals, throws } from "node:assert";
 * const r = newReport();
 * assertEquals(checkBox([-5, 0, 10, 10], 20, 20, "clip", r, "a.json", "ann 1"), [0, 0, 10, 10]);
 * assertEquals(checkBox([5, 5, 5, 9], 20, 20, "drop", r, "a.json", "ann 2"), null);
 * throws(() => checkBox([0, 0, 30, 10], 20, 20, "error", r, "a.json", "ann 3"), /a.json \(ann 3\): box/);
 * ```
 */
export function checkBox(
  box: [number, number, number, number],
  width: number,
  height: number,
  policy: Policy,
  report: PolicyReport,
  file: string,
  where: string,
): [number, number, number, number] | null {
  const [x1, y1, x2, y2] = box;
  const t = BOX_TOLERANCE;
  const finite = box.every(Number.isFinite);
  const degenerate = !finite || !(x2 > x1) || !(y2 > y1);
  const outside = finite && (x1 < -t || y1 < -t || x2 > width + t || y2 > height + t);
  if (!degenerate && !outside) return box;
  const what = degenerate
    ? `box [${box.join(", ")}] (x1,y1,x2,y2) is degenerate`
    : `box [${box.join(", ")}] (x1,y1,x2,y2) lies outside the ${width}x${height} image`;
  if (policy === "error") throw new InputError(`${what}; use --policy clip or drop to repair`, { file, where });
  if (policy === "clip" && finite) {
    const c: [number, number, number, number] = [
      Math.min(Math.max(x1, 0), width),
      Math.min(Math.max(y1, 0), height),
      Math.min(Math.max(x2, 0), width),
      Math.min(Math.max(y2, 0), height),
    ];
    if (c[2] > c[0] && c[3] > c[1]) {
      report.clippedBoxes++;
      note(report, `${file} (${where}): clipped ${what}`);
      return c;
    }
  }
  report.droppedBoxes++;
  note(report, `${file} (${where}): dropped ${what}`);
  return null;
}

/** Handles an item (class, image) the policy can only drop: throws under `error`, else counts and returns. */
export function rejectItem(
  policy: Policy,
  report: PolicyReport,
  kind: "box" | "image",
  message: string,
  file: string,
  where: string,
): void {
  if (policy === "error") throw new InputError(`${message}; use --policy drop to skip`, { file, where });
  if (kind === "box") report.droppedBoxes++;
  else report.droppedImages++;
  note(report, `${file} (${where}): dropped: ${message}`);
}
