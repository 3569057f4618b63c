/**
 * Checks for, and where possible installs, the Debian packages a task needs
 * (the notebook runner needs python3-nbclient, the MPI tests openmpi-bin, the oneDNN tests libdnnl2, the
 * native kernel tests gcc). Stops with the exact command
 * when it cannot install them itself.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { InputError } from "../lib/errors.ts";

/** The interpreter that sees Debian's python modules (plain python3 may be a pyenv one). */
export const DEBIAN_PYTHON = "/usr/bin/python3";

/** True when `module` imports under Debian's python. */
export function hasPythonModule(module: string): boolean {
  const r = spawnSync(DEBIAN_PYTHON, ["-c", `import ${module}`], { stdio: "ignore" });
  return r.status === 0;
}

/** True when `command --version` runs (e.g. `mpirun`). */
export function hasCommand(command: string): boolean {
  const r = spawnSync(command, ["--version"], { stdio: "ignore" });
  return r.status === 0;
}

/** True when the dynamic linker knows the shared library `soname` (e.g. `libdnnl.so.2`). */
export function hasSharedLibrary(soname: string): boolean {
  const r = spawnSync("/sbin/ldconfig", ["-p"], { encoding: "utf8" });
  return r.status === 0 && (r.stdout ?? "").split("\n").some((l) => l.trim().startsWith(`${soname} `));
}

/** Whether a C compiler (`cc`) runs and the C library's headers are there (what native_kernels.ts needs). */
export function hasCompiler(): boolean {
  return hasCommand(Deno.env.get("CC") || "cc") && fs.existsSync("/usr/include/stdint.h");
}

/**
 * Makes sure Debian `packages` are installed when `probe()` says they are
 * missing: installs them with apt-get as root, otherwise throws with the
 * exact command to run.
 */
export function ensureDebianPackages(packages: string[], probe: () => boolean, why: string): void {
  if (probe()) return;
  const cmd = `apt-get update && apt-get install -y --no-install-recommends ${packages.join(" ")}`;
  const isRoot = typeof Deno.uid === "function" && Deno.uid() === 0;
  if (!isRoot) throw new InputError(`${why} needs Debian packages ${packages.join(", ")}. Run:\n  sudo ${cmd}`);
  console.error(`installing ${packages.join(", ")} for ${why} ...`);
  for (const args of [["update", "-qq"], ["install", "-y", "-qq", "--no-install-recommends", ...packages]]) {
    const r = spawnSync("apt-get", args, {
      stdio: "inherit",
      env: { ...Deno.env.toObject(), DEBIAN_FRONTEND: "noninteractive" },
    });
    if (r.status !== 0) throw new InputError(`installing ${packages.join(", ")} failed. Run:\n  ${cmd}`);
  }
  if (!probe()) throw new InputError(`${packages.join(", ")} installed but still not usable. Run:\n  ${cmd}`);
}

/**
 * Installs Debian `packages` that make a task faster but that it can do
 * without: as root when `probe()` says they are missing, else a one-line
 * hint. Never throws.
 */
export function offerDebianPackages(packages: string[], probe: () => boolean, why: string): void {
  if (probe()) return;
  try {
    ensureDebianPackages(packages, probe, why);
  } catch {
    console.error(`note: ${why}; to install: sudo apt-get install -y --no-install-recommends ${packages.join(" ")}`);
  }
}
