/**
 * The one in-memory record every dataset reader produces and every writer,
 * loader and evaluator consumes.
 *
 * @module
 */

/** One image and its annotations. */
export interface DetectionRecord {
  /** Image id (COCO `id`, or the position in the source). */
  imgId: number;
  /** Image file path (or name within the archive/record). */
  file: string;
  /** Image width in pixels. */
  width: number;
  /** Image height in pixels. */
  height: number;
  /** [N, 4] pixel boxes as x1, y1, x2, y2 (row-major). */
  boxes: Float64Array;
  /** [N] contiguous class labels 1..C; 0 is background and never appears here. */
  labels: Int32Array;
  /** [N] 1 for COCO crowd regions, else 0. */
  iscrowd: Uint8Array;
  /** Encoded image bytes, when the source holds them (MindRecord) or they were read. */
  image?: Uint8Array;
  /**
   * Where the encoded image bytes lie in a file, when they were left there (a lazily indexed MindRecord set):
   * `length` bytes at byte `offset` of `file`.
   */
  imageAt?: { file: string; offset: number; length: number };
  /** Extra per-annotation fields kept for exact round trips (COCO `area`, category ids ...). */
  extra?: Record<string, unknown>;
}

/** The number of boxes in a record. */
export function numBoxes(r: DetectionRecord): number {
  return r.labels.length;
}
