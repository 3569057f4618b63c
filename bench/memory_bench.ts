/**
 * The memory section of `deno task bench`: peak resident memory of reading a
 * MindRecord set as training and eval read it (indexed, then every image read
 * from disk once), for a generated set of ~100 MB and one of ~2 GB, each in a
 * fresh process. The eager reader (every row, image bytes included, in
 * memory, as `readDetectionRecords` returns them) is measured on the same
 * files as the reference.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { SSD_DESC, SSD_SCHEMA } from "../lib/mindrecord_ssd.ts";
import { writeMindRecord } from "../lib/mindrecord_writer.ts";
import type { BenchRow } from "./report.ts";

/** A noise JPEG of about `bytes` bytes (noise does not compress, so size follows pixels). */
async function noiseJpeg(side: number, seed: number): Promise<Uint8Array> {
  const px = new Uint8Array(side * side * 3);
  let s = seed >>> 0;
  for (let i = 0; i < px.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    px[i] = s >>> 24;
  }
  return new Uint8Array(
    await sharp(px, { raw: { width: side, height: side, channels: 3 } }).jpeg({ quality: 90 })
      .toBuffer(),
  );
}

/** Writes an SSD-schema set of `rows` rows (8 shards) with `image` as every row's image. */
function writeSet(dir: string, rows: number, image: Uint8Array): string {
  fs.mkdirSync(dir, { recursive: true });
  function* gen() {
    for (let i = 0; i < rows; i++) {
      yield {
        img_id: { dtype: "int32" as const, shape: [1], data: Int32Array.of(i + 1) },
        image,
        annotation: { dtype: "int32" as const, shape: [1, 5], data: Int32Array.of(10, 20, 300, 400, 1 + (i % 80)) },
      };
    }
  }
  writeMindRecord(path.join(dir, "ssd.mindrecord"), gen(), {
    schema: SSD_SCHEMA,
    desc: SSD_DESC,
    shardCount: 8,
    batchSize: 64,
  });
  return path.join(dir, "ssd.mindrecord0");
}

interface ChildResult {
  rows: number;
  imageBytes: number;
  peakRssMb: number;
  seconds: number;
}

/** Reads `file` in a fresh process (`lazy`: as training does; `eager`: every row in memory) and reports its peak RSS. */
async function measure(file: string, mode: "lazy" | "eager"): Promise<ChildResult> {
  const child = new URL("./memory_child.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", child, mode, file],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`memory child (${mode} ${file}) failed`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** The memory section. */
export async function benchMemory(o: { quick?: boolean } = {}): Promise<BenchRow[]> {
  const dir = Deno.makeTempDirSync({ prefix: "memory_bench_" });
  try {
    const image = await noiseJpeg(640, 1); // ~0.5 MB, a large COCO image's size
    const mb = image.length / 2 ** 20;
    const small = Math.ceil(100 / mb), big = Math.ceil((o.quick ? 600 : 2100) / mb);
    console.error(`  writing ${small} + ${big} rows of a ${(mb * 1024).toFixed(0)} KiB image ...`);
    const smallFile = writeSet(path.join(dir, "small"), small, image);
    const bigFile = writeSet(path.join(dir, "big"), big, image);
    const size = (f: string) =>
      fs.readdirSync(path.dirname(f)).filter((n) => !n.endsWith(".db")).reduce(
        (a, n) => a + fs.statSync(path.join(path.dirname(f), n)).size,
        0,
      ) / 2 ** 20;
    const rows: BenchRow[] = [];
    const ref: Record<string, number> = {};
    for (const mode of ["lazy", "eager"] as const) {
      for (const [label, file] of [["small", smallFile], ["big", bigFile]] as const) {
        const r = await measure(file, mode);
        if (label === "small") ref[mode] = r.peakRssMb;
        const what = mode === "lazy"
          ? "indexed, every image read once (training/eval)"
          : "eager: every row in memory (reference)";
        rows.push({
          section: "memory",
          name: `MindRecord, ${(r.imageBytes / 2 ** 20).toFixed(0)} MB of images in ${r.rows} rows ` +
            `(${size(file).toFixed(0)} MB on disk): ${what}`,
          ms: r.seconds * 1000,
          note: `peak RSS ${r.peakRssMb.toFixed(0)} MB` +
            (label === "big" ? ` (${(r.peakRssMb / ref[mode]).toFixed(2)}x the small set's)` : ""),
        });
      }
    }
    return rows;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
