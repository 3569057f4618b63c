/**
 * Child process of the memory bench: reads a MindRecord set and prints
 * {rows, imageBytes, peakRssMb, seconds} as JSON. `lazy` reads it as training
 * and eval do (lib/dataset.ts: indexed, each image read from disk when used);
 * `eager` holds every row, image bytes included.
 */
import * as fs from "node:fs";
import { imageBytes } from "../lib/augment.ts";
import { loadSplit } from "../lib/dataset.ts";
import { readDetectionRecords } from "../lib/mindrecord_ssd.ts";

const [mode, file] = Deno.args;
const t0 = performance.now();
let rows = 0, bytes = 0;
if (mode === "lazy") {
  const split = { format: "mindrecord", path: file, images: null, annotations: null, limit: null } as const;
  const { records } = loadSplit({ root: ".", train: split, val: split, policy: "error" }, "train");
  for (const r of records) {
    bytes += (await imageBytes(r)).length;
    rows++;
  }
} else {
  for (const r of readDetectionRecords(file)) {
    bytes += r.image!.length;
    rows++;
  }
}
// VmHWM: the peak resident set size of this process.
const hwm = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"));
console.log(JSON.stringify({
  rows,
  imageBytes: bytes,
  peakRssMb: hwm ? Number(hwm[1]) / 1024 : NaN,
  seconds: (performance.now() - t0) / 1000,
}));
