/** `deno task notebooks`: executes every notebook headlessly on the Deno kernel; fails on any cell error. */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parseTaskArgs, runTask } from "./cli.ts";
import { InputError } from "../lib/errors.ts";
import { BACKENDS } from "../lib/engine/mod.ts";
import { DEBIAN_PYTHON, ensureDebianPackages, hasPythonModule } from "./setup_check.ts";

const spec = {
  name: "notebooks",
  summary: "Execute notebooks/*.ipynb on the Deno kernel (headless) and keep the executed copies.",
  usage: "[--out DIR] [--backend NAME] [NOTEBOOK ...]",
  positionals: "NOTEBOOK ...  notebooks to run (default: all of notebooks/)",
  flags: {
    out: { type: "string", arg: "DIR", default: "runs/notebooks", help: "where executed copies go" },
    backend: {
      type: "string",
      arg: "NAME",
      help: `run the notebooks' models on this backend (${BACKENDS.join(", ")}; sets SSD_BACKEND; default: ` +
        "each notebook's own)",
    },
  },
} as const;

runTask(() => {
  const { values, positionals } = parseTaskArgs(spec);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
  const books = positionals.length > 0
    ? positionals.map((p) => path.resolve(p))
    : fs.readdirSync(path.join(root, "notebooks")).filter((f) => f.endsWith(".ipynb")).sort()
      .map((f) => path.join(root, "notebooks", f));
  if (books.length === 0) throw new InputError("no notebooks found");
  const backend = values.backend as string | undefined;
  if (backend !== undefined && !(BACKENDS as readonly string[]).includes(backend)) {
    throw new InputError(`unknown --backend "${backend}"; choose one of ${BACKENDS.join(", ")}`);
  }
  const backendEnv: Record<string, string> = backend ? { SSD_BACKEND: backend } : {};
  ensureDebianPackages(["python3-nbclient"], () => hasPythonModule("nbclient"), "running notebooks");
  // The kernelspec stores Deno's absolute path, so register it on every run.
  const reg = spawnSync(Deno.execPath(), ["jupyter", "--install", "--force"], { stdio: "pipe" });
  if (reg.status !== 0) throw new InputError(`deno jupyter --install failed: ${reg.stderr}`);
  const r = spawnSync(
    DEBIAN_PYTHON,
    [path.join(root, "tasks", "notebook_runner.py"), path.resolve(values.out as string), ...books],
    { stdio: "inherit", env: { ...Deno.env.toObject(), NO_COLOR: "1", ...backendEnv } },
  );
  if (r.status !== 0) throw new InputError(`notebooks failed (executed copies in ${values.out})`);
});
