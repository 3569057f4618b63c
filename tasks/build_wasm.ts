/**
 * `deno task build-wasm`: compiles lib/engine/simd_kernels.wat into
 * lib/engine/simd_kernels_wasm.ts (the module's bytes, base64). Run it after editing
 * the .wat; tests/simd_kernels_test.ts fails while the two disagree.
 */
import { parseArgs } from "node:util";
import { compileSimdKernels, SIMD_KERNELS_TS, simdKernelsModuleText } from "../lib/engine/simd_kernels_build.ts";
import { writeFileAtomic } from "../lib/fs_atomic.ts";

const { values } = parseArgs({ options: { help: { type: "boolean", short: "h" } } });
if (values.help) {
  console.log(
    "usage: deno task build-wasm\n\nCompiles lib/engine/simd_kernels.wat into lib/engine/simd_kernels_wasm.ts.",
  );
  Deno.exit(0);
}
const bytes = await compileSimdKernels();
await writeFileAtomic(SIMD_KERNELS_TS, simdKernelsModuleText(bytes));
console.log(`wrote ${SIMD_KERNELS_TS} (${bytes.length} bytes of wasm)`);
