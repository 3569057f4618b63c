// Box coder: hand-worked encodings, exact inverse, tutorial golden decode, config forms.
import { tutorialBoxes } from "./tutorial_boxes.ts";
import assert from "node:assert";
import * as fs from "node:fs";
import {
  type BoxCoderConfig,
  boxCoderSpec,
  decodeBoxes,
  encodeBoxes,
  scaleFactorsFromConfig,
} from "../lib/box_coder.ts";
import { validate } from "../lib/config.ts";
import { createRng, uniform } from "../lib/rng.ts";

const golden = JSON.parse(
  fs.readFileSync(new URL("./fixtures/anchors/tutorial_formulas_golden.json", import.meta.url), "utf8"),
);
const TUTORIAL_SF = [10, 10, 5, 5];

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.strictEqual(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

Deno.test("a box shifted by a tenth of the prior and twice as tall encodes to (1, 0, 5 ln 2, 0)", () => {
  // Prior centre (0.5, 0.5), size 0.2 x 0.2. Box centre (0.52, 0.5), size 0.4 x 0.2.
  const t = encodeBoxes([0.32, 0.4, 0.72, 0.6], [0.5, 0.5, 0.2, 0.2], { scaleFactors: TUTORIAL_SF });
  // ty = (0.52 - 0.5) / (0.2 · 0.1) = 1; th = ln(0.4 / 0.2) / 0.2 = 5 ln 2.
  const expected = [1, 0, 5 * Math.LN2, 0];
  assert.ok(maxDiff(t, expected) < 1e-6, `${Array.from(t)}`);
});

Deno.test("the scale factors weight each coordinate separately (TF OD API order y, x, h, w)", () => {
  const t = encodeBoxes([0.32, 0.42, 0.72, 0.62], [0.5, 0.5, 0.2, 0.2], { scaleFactors: [1, 2, 3, 4] });
  // ty = 0.02 / 0.2 · 1, tx = 0.02 / 0.2 · 2, th = ln 2 · 3, tw = ln 1 · 4.
  assert.ok(maxDiff(t, [0.1, 0.2, 3 * Math.LN2, 0]) < 1e-6, `${Array.from(t)}`);
});

Deno.test("a degenerate box encodes to the tutorial's floor log(1e-6) / 0.2, not -Infinity", () => {
  const t = encodeBoxes([0.5, 0.5, 0.5, 0.6], [0.5, 0.55, 0.2, 0.2], { scaleFactors: TUTORIAL_SF });
  assert.ok(Math.abs(t[2] - Math.log(1e-6) * 5) < 1e-4, `${t[2]}`);
  assert.ok(Number.isFinite(t[2]));
});

Deno.test("decoding zero predictions gives back the default boxes' corners", () => {
  const b = tutorialBoxes();
  const out = decodeBoxes(new Float32Array(b.count * 4), b.centers, { scaleFactors: TUTORIAL_SF });
  // Within 1 ulp near 1: the corners were rounded from float64, the decode from float32 centres.
  assert.ok(maxDiff(out, b.corners) <= 1.2e-7);
});

Deno.test("encode then decode returns the boxes within 1e-5 on all 8732 tutorial priors", () => {
  const b = tutorialBoxes(), rng = createRng(7);
  const boxes = new Float32Array(b.count * 4);
  for (let i = 0; i < b.count; i++) {
    const cy = uniform(rng, 0.05, 0.95), cx = uniform(rng, 0.05, 0.95);
    const h = uniform(rng, 0.01, 0.9), w = uniform(rng, 0.01, 0.9);
    boxes.set([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], 4 * i);
  }
  const t = encodeBoxes(boxes, b.centers, { scaleFactors: TUTORIAL_SF });
  const back = decodeBoxes(t, b.centers, { scaleFactors: TUTORIAL_SF });
  const d = maxDiff(back, boxes);
  assert.ok(d <= 1e-5, `max round-trip error ${d}`);
});

Deno.test("decode then encode returns predictions in [-2, 2] within 1e-5 on all 8732 tutorial priors", () => {
  const b = tutorialBoxes(), rng = createRng(8);
  const loc = Float32Array.from({ length: b.count * 4 }, () => uniform(rng, -2, 2));
  const boxes = decodeBoxes(loc, b.centers, { scaleFactors: TUTORIAL_SF });
  const back = encodeBoxes(boxes, b.centers, { scaleFactors: TUTORIAL_SF });
  // Float32 corners limit this direction: 1 ulp of a corner is amplified by 10 / prior size (0.07 at least).
  const d = maxDiff(back, loc);
  assert.ok(d <= 1e-5, `max round-trip error ${d}`);
});

Deno.test("clipping clamps decoded corners to [0, 1], as the tutorial's decoder", () => {
  const anchors = [0.05, 0.95, 0.2, 0.2];
  const raw = decodeBoxes([0, 0, 0, 0], anchors, { scaleFactors: TUTORIAL_SF });
  assert.ok(raw[0] < 0 && raw[3] > 1);
  const clipped = decodeBoxes([0, 0, 0, 0], anchors, { scaleFactors: TUTORIAL_SF, clip: true });
  assert.ok(maxDiff(clipped, [0, 0.85, 0.15, 1]) < 1e-6, `${Array.from(clipped)}`);
});

Deno.test("decoding matches the tutorial's clipped decoder on golden predictions", () => {
  const b = tutorialBoxes();
  const g = golden.decode_tutorial_ssd300_vgg16;
  const anchors = g.indices.flatMap((i: number) => Array.from(b.centers.subarray(4 * i, 4 * i + 4)));
  const out = decodeBoxes(g.loc.flat(), anchors, { scaleFactors: TUTORIAL_SF, clip: true });
  const d = maxDiff(out, g.boxes.flat());
  assert.ok(d <= 1e-6, `max difference ${d}`);
});

Deno.test("prior_scaling 0.1/0.2 and TF scale factors 10/10/5/5 give the same coder", () => {
  const parse = (raw: Record<string, unknown>) => validate(raw, boxCoderSpec) as BoxCoderConfig;
  const a = scaleFactorsFromConfig(parse({ prior_scaling: [0.1, 0.2] }));
  const b = scaleFactorsFromConfig(parse({ scale_factors: [10, 10, 5, 5] }));
  assert.deepStrictEqual(a, b);
  assert.throws(() => scaleFactorsFromConfig(parse({})), /box_coder\.prior_scaling/);
  assert.throws(() => scaleFactorsFromConfig(parse({ scale_factors: [10, 10, 5] })), /box_coder\.scale_factors/);
});

Deno.test("encode and decode refuse arrays of different lengths", () => {
  assert.throws(() => encodeBoxes(new Float32Array(8), new Float32Array(4), { scaleFactors: TUTORIAL_SF }), /2 boxes/);
  assert.throws(
    () => decodeBoxes(new Float32Array(8), new Float32Array(4), { scaleFactors: TUTORIAL_SF }),
    /2 predictions/,
  );
});
