import assert from "node:assert";
import { loadConfig } from "../lib/config.ts";
import { createRng } from "../lib/rng.ts";
import { makeScene, type SynthConfig, synthSpec, writeSynthDataset } from "../lib/synth.ts";

const cfg = loadConfig<SynthConfig>("configs/synth.yaml", synthSpec);

Deno.test("makeScene() keeps to the fixed difficulty", () => {
  const rng = createRng(7);
  const size = cfg.image_size;
  const counts = new Set<number>();
  const classes = new Set<number>();
  for (let i = 0; i < 300; i++) {
    const scene = makeScene(rng, cfg);
    counts.add(scene.objects.length);
    assert.ok(scene.objects.length >= 1 && scene.objects.length <= 6);
    for (const o of scene.objects) {
      classes.add(o.cls);
      const [x1, y1, x2, y2] = o.box;
      assert.ok(x1 >= 0 && y1 >= 0 && x2 <= size && y2 <= size && x2 > x1 && y2 > y1, "box inside the image");
      const w = o.full[2] - o.full[0], h = o.full[3] - o.full[1];
      for (const side of [w, h]) {
        assert.ok(side >= 0.08 * size - 0.02 && side <= 0.6 * size + 0.02, `side ${side}`);
      }
      assert.ok(((x2 - x1) * (y2 - y1)) / (w * h) >= 0.5 - 1e-9, "at least half visible");
    }
  }
  assert.ok(counts.has(1) && counts.has(6), "the full 1-6 range occurs");
  assert.strictEqual(classes.size, 3);
});

Deno.test("some objects are truncated by the border, and boxes are clipped", () => {
  const rng = createRng(3);
  let truncated = 0;
  for (let i = 0; i < 100; i++) {
    for (const o of makeScene(rng, cfg).objects) if (o.full.some((v, k) => v !== o.box[k])) truncated++;
  }
  assert.ok(truncated > 10);
});

Deno.test("writeSynthDataset() is byte-identical for the same seed", async () => {
  const small = { ...cfg, splits: { train: 4, val: 2 } };
  const a = Deno.makeTempDirSync(), b = Deno.makeTempDirSync();
  await writeSynthDataset(a, small, { seed: 5, quiet: true });
  await writeSynthDataset(b, small, { seed: 5, quiet: true });
  const files = (dir: string): string[] =>
    [...Deno.readDirSync(dir)].flatMap((e) =>
      e.isDirectory ? files(`${dir}/${e.name}`).map((f) => `${e.name}/${f}`) : [e.name]
    ).sort();
  assert.deepStrictEqual(files(a), files(b));
  assert.strictEqual(files(a).length, 8);
  for (const f of files(a)) assert.deepStrictEqual(Deno.readFileSync(`${a}/${f}`), Deno.readFileSync(`${b}/${f}`), f);
  const coco = JSON.parse(Deno.readTextFileSync(`${a}/annotations/instances_val.json`));
  assert.strictEqual(coco.images.length, 2);
  assert.deepStrictEqual(coco.categories.map((c: { name: string }) => c.name), ["rectangle", "ellipse", "triangle"]);
  const c = Deno.makeTempDirSync();
  await writeSynthDataset(c, small, { seed: 6, quiet: true });
  assert.notDeepStrictEqual(
    Deno.readFileSync(`${a}/images/train/000001.jpg`),
    Deno.readFileSync(`${c}/images/train/000001.jpg`),
  );
});
