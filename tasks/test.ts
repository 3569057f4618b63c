/**
 * `deno task test`: every test, the JSDoc examples, then every notebook.
 * Ends with one plain line, "tests: N passed, N failed".
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { parseTaskArgs, runTask } from "./cli.ts";
import { ensureDebianPackages, hasCommand, hasCompiler, hasSharedLibrary } from "./setup_check.ts";

const spec = {
  name: "test",
  summary: "Run the unit tests, the JSDoc @example blocks of lib/, and every notebook.",
  usage: "[--no-notebooks] [--filter TEXT]",
  flags: {
    "no-notebooks": { type: "boolean", help: "skip executing the notebooks" },
    filter: { type: "string", arg: "TEXT", help: "run only tests whose name contains TEXT" },
  },
} as const;

async function denoTest(args: string[]): Promise<{ passed: number; failed: number; ok: boolean }> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--doc", ...args],
    stdout: "piped",
    stderr: "inherit",
    env: { NO_COLOR: "1" },
  });
  const child = cmd.spawn();
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    const s = decoder.decode(chunk, { stream: true });
    text += s;
    await Deno.stdout.write(chunk);
  }
  const status = await child.status;
  const summary = [...text.matchAll(/^(?:ok|FAILED) \| (\d+) passed.*?\| (\d+) failed/gm)].at(-1);
  return {
    passed: summary ? Number(summary[1]) : 0,
    failed: summary ? Number(summary[2]) : (status.success ? 0 : 1),
    ok: status.success,
  };
}

/** Whether a Vulkan driver (an ICD manifest) is installed. */
function hasVulkanDriver(): boolean {
  try {
    return fs.readdirSync("/usr/share/vulkan/icd.d").some((f) => f.endsWith(".json"));
  } catch {
    return false;
  }
}

runTask(async () => {
  const { values } = parseTaskArgs(spec);
  const filter = values.filter ? ["--filter", values.filter as string] : [];
  // The data-parallel tests run 2 ranks on loopback under Open MPI's mpirun and MPICH's mpiexec (its handles differ).
  ensureDebianPackages(
    ["openmpi-bin", "mpich"],
    () => hasCommand("mpirun") && hasCommand("mpiexec.mpich"),
    "the MPI data-parallel tests",
  );
  // The webgpu tests run on Mesa's lavapipe, a software Vulkan, where no GPU driver is installed.
  ensureDebianPackages(
    ["mesa-vulkan-drivers"],
    hasVulkanDriver,
    "the WebGPU tests",
  );
  // oneDNN runs the onnxruntime backend's convs where it is installed (lib/engine/dnnl.ts); its tests need it.
  ensureDebianPackages(["libdnnl2"], () => hasSharedLibrary("libdnnl.so.2"), "the oneDNN conv tests");
  // Batch norm runs on oneDNN's threads as native code that a C compiler builds (lib/engine/native_kernels.ts).
  ensureDebianPackages(["gcc", "libc6-dev"], hasCompiler, "the native batch-norm kernel tests");
  // The task helpers' own JSDoc examples run too (the other tasks/ files are scripts, not modules to test).
  const unit = await denoTest([...filter, "tests/", "lib/", "tasks/cli.ts", "tasks/setup_check.ts"]);
  let passed = unit.passed, failed = unit.failed + (unit.ok || unit.failed > 0 ? 0 : 1);
  if (!values["no-notebooks"]) {
    const r = spawnSync(Deno.execPath(), ["run", "-A", "tasks/notebooks.ts"], {
      stdio: ["inherit", "pipe", "inherit"],
      encoding: "utf8",
    });
    Deno.stdout.writeSync(new TextEncoder().encode(r.stdout ?? ""));
    // One result per notebook; a runner that failed before any notebook counts as one failure.
    const ok = (r.stdout?.match(/^notebook .* \.\.\. ok/gm) ?? []).length;
    const bad = (r.stdout?.match(/^notebook .* \.\.\. FAILED/gm) ?? []).length;
    passed += ok;
    failed += bad + (r.status !== 0 && bad === 0 ? 1 : 0);
  }
  console.log(`tests: ${passed} passed, ${failed} failed`);
  if (failed > 0) Deno.exit(1);
});
