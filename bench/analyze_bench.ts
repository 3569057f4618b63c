/**
 * The error analysis on the COCO-val-sized workload of the COCOeval bench
 * (5000 images, 500k detections): TIDE alone and the whole of
 * `analyzeDetections` (TIDE, confusion matrix, COCOeval per class, PR
 * breakdown, worst images, pictures), and beside them tidecv on the same files
 * when `/usr/bin/python3` can import it (`TIDECV_DIR`: a folder holding the
 * `tidecv` package, and a `ref.py` that sets it up when present, as the
 * vendored reference copy has). tidecv's COCO loader needs a `segmentation` on
 * every annotation and a `file_name` on every image; the timer adds them (the box as a polygon), inside
 * its time.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { analyzeDetections } from "../lib/analysis_stage.ts";
import { tideEvaluate } from "../lib/tide.ts";
import { writeCocoEvalWorkload } from "./make_cocoeval_workload.ts";
import type { BenchRow } from "./report.ts";

const PY_TIMER = `
import json, os, sys, time, contextlib, io
d = os.environ.get("TIDECV_DIR")
if d:
    sys.path.insert(0, d)
    if os.path.exists(os.path.join(d, "ref.py")):
        import ref
t0 = time.time()
from tidecv import TIDE, datasets
gt = json.load(open(sys.argv[1]))
for im in gt["images"]:
    im.setdefault("file_name", str(im["id"]))
for a in gt["annotations"]:
    x, y, w, h = a["bbox"]
    a.setdefault("segmentation", [[x, y, x + w, y, x + w, y + h, x, y + h]])
path = sys.argv[1] + ".seg.json"
json.dump(gt, open(path, "w"))
with contextlib.redirect_stdout(io.StringIO()):
    t = TIDE()
    t.evaluate(datasets.COCO(path), datasets.COCOResult(sys.argv[2]), mode=TIDE.BOX)
    main = t.get_main_errors(); special = t.get_special_errors()
run = list(t.runs.values())[0]
print(json.dumps({"seconds": time.time() - t0, "ap50": run.ap,
                  "main": list(main.values())[0], "special": list(special.values())[0]}))
`;

/** tidecv's time and numbers on the files, or why it did not run. */
async function timeTidecv(gtFile: string, dtFile: string): Promise<
  { seconds: number; ap50: number; main: Record<string, number> } | { reason: string }
> {
  const dir = Deno.env.get("TIDECV_DIR");
  const env: Record<string, string> = dir ? { TIDECV_DIR: path.resolve(dir) } : {};
  try {
    const probe = await new Deno.Command("/usr/bin/python3", {
      args: [
        "-c",
        'import os,sys\nd=os.environ.get("TIDECV_DIR")\nif d:\n sys.path.insert(0,d)\n import ref\nimport tidecv',
      ],
      env,
      stdout: "null",
      stderr: "null",
    }).output();
    if (probe.code !== 0) return { reason: dir ? `tidecv in ${dir} does not import` : "tidecv is not importable" };
  } catch {
    return { reason: "/usr/bin/python3 not found" };
  }
  const out = await new Deno.Command("/usr/bin/python3", { args: ["-c", PY_TIMER, gtFile, dtFile], env }).output();
  if (out.code !== 0) {
    return { reason: `failed: ${new TextDecoder().decode(out.stderr).trim().split("\n").at(-1)}` };
  }
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
}

/** The analyze section of `deno task bench`. */
export async function benchAnalyze(o: { quick?: boolean } = {}): Promise<BenchRow[]> {
  const dir = await Deno.makeTempDir({ prefix: "analyze_bench_" });
  try {
    const w = await writeCocoEvalWorkload(dir, { images: o.quick ? 1000 : 5000 });
    const size = `${w.images} images, ${w.gtBoxes} gt, ${w.detections} dets`;
    const read =
      async () => [JSON.parse(await Deno.readTextFile(w.gtFile)), JSON.parse(await Deno.readTextFile(w.dtFile))];
    let t0 = performance.now();
    const [gt, dt] = await read();
    const tide = tideEvaluate(gt, dt);
    const tideSeconds = (performance.now() - t0) / 1000;
    t0 = performance.now();
    const [gt2, dt2] = await read();
    await analyzeDetections(gt2, dt2, { out: path.join(dir, "analysis") });
    const allSeconds = (performance.now() - t0) / 1000;
    const ref = await timeTidecv(w.gtFile, w.dtFile);
    const rows: BenchRow[] = [];
    const tideRow: BenchRow = {
      section: "analyze",
      name: `TIDE (ours): read + evaluate, ${size}`,
      ms: tideSeconds * 1000,
      note: "measured",
    };
    if ("seconds" in ref) {
      const diff = Math.max(
        Math.abs(ref.ap50 - tide.ap50),
        ...Object.entries(tide.main).map(([k, v]) => Math.abs(v - ref.main[k])),
      );
      tideRow.speedup = ref.seconds / tideSeconds;
      tideRow.against = "vs tidecv, same files";
      tideRow.note = `max |dAP - tidecv's| ${diff.toExponential(1)}`;
    }
    rows.push(tideRow);
    rows.push({
      section: "analyze",
      name: `deno task analyze's work (ours): read, TIDE, confusion, COCOeval, PR breakdown, worst images, pictures`,
      ms: allSeconds * 1000,
      note: `measured; ${size}`,
    });
    rows.push({
      section: "analyze",
      name: "tidecv 1.0.1: load (with file names and segmentation added) + evaluate + errors",
      ms: "seconds" in ref ? ref.seconds * 1000 : null,
      note: "seconds" in ref ? "measured" : `not run: ${ref.reason}`,
    });
    return rows;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const { formatTable } = await import("./report.ts");
  console.log(formatTable(await benchAnalyze({ quick: Deno.args.includes("--quick") })));
}
