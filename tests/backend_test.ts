import assert from "node:assert";
import { explainOutOfMemory } from "../lib/backend.ts";
import { InputError } from "../lib/errors.ts";

Deno.test("explainOutOfMemory() names the batch size and the ways out; other errors pass through", () => {
  const abort = new Error("Aborted(Cannot enlarge memory arrays to size 4294967296 bytes)");
  const e = explainOutOfMemory(abort, { batchSize: 4, what: "training", segments: 16 });
  assert.ok(e instanceof InputError);
  assert.match(e.message, /training ran out of the wasm backend's 4 GiB heap at batch size 4/);
  assert.match(e.message, /--train\.batch_size=2/);
  assert.match(e.message, /--train\.segments=32/);
  assert.strictEqual(e.cause, abort);
  const one = explainOutOfMemory(new Error("memory access out of bounds"), { batchSize: 1, what: "training" });
  assert.match((one as Error).message, /Even batch size 1 does not fit.*--train\.segments=8/);
  const other = new TypeError("x is undefined");
  assert.strictEqual(explainOutOfMemory(other, { batchSize: 4, what: "training" }), other);
});
