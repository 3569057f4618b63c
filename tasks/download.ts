/**
 * `deno task download NAME|URL --out DIR [--sha256 HEX]`: downloads a known
 * dataset (see configs/datasets.yaml) or any http(s) URL with resume,
 * checksum verification and safe archive extraction.
 *
 * @module
 */
import { intFlag, parseTaskArgs, runTask, type TaskSpec } from "./cli.ts";
import { InputError } from "../lib/errors.ts";
import { formatBytes } from "../lib/progress.ts";
import { DEFAULT_DATASETS_CONFIG, fetchDataset, loadDatasets } from "../lib/download.ts";

const SPEC: TaskSpec = {
  name: "download",
  summary:
    "Download a dataset by name or URL: resumable, checksum-verified, with safe zip/tar extraction into OUT/NAME.",
  usage: "NAME|URL [--url MIRROR] [--out DIR] [--sha256 HEX] [--no-extract] [--config FILE] | --list",
  positionals: "NAME|URL  a dataset from the config (see --list) or an http(s) URL",
  flags: {
    out: { type: "string", arg: "DIR", default: "runs/data", help: "folder for downloads and extractions" },
    url: {
      type: "string",
      arg: "URL",
      help: "fetch the named dataset from this mirror (same checksum handling, same folder OUT/NAME)",
    },
    sha256: { type: "string", arg: "HEX", help: "expected SHA-256; overrides a missing checksum in the config" },
    "no-extract": { type: "boolean", help: "keep the archive, do not extract it" },
    config: { type: "string", arg: "FILE", default: DEFAULT_DATASETS_CONFIG, help: "dataset registry" },
    tries: { type: "string", arg: "N", default: "3", help: "attempts before giving up (a rerun resumes)" },
    list: { type: "boolean", help: "print the known datasets and exit" },
  },
  epilog: [
    "Examples:",
    "  deno task download --list",
    "  deno task download ssd_datasets",
    "  deno task download ssd_datasets --url https://mirror.example.org/ssd_datasets.zip",
    "  deno task download coco2017_val --out runs/data",
    "  deno task download https://example.org/data.tar.gz --sha256 <64 hex digits>",
    "",
    "An interrupted transfer leaves OUT/.FILE.part; running the same command again resumes it.",
  ].join("\n"),
};

async function main(): Promise<void> {
  const { values, positionals } = parseTaskArgs(SPEC);
  const config = values.config as string;
  if (values.list) {
    for (const d of loadDatasets(config)) {
      console.log(`${d.name.padEnd(22)} ${d.description}`);
      console.log(`${"".padEnd(22)} ${d.url}${d.sha256 ? "" : "  (no sha256 known)"}`);
    }
    return;
  }
  if (positionals.length !== 1) {
    throw new InputError(`expected one dataset name or URL, got ${positionals.length}; see --help or --list`);
  }
  const tries = intFlag(values, "tries") ?? 3;
  if (tries < 1) throw new InputError(`option --tries must be at least 1, got ${tries}`);
  const r = await fetchDataset(positionals[0], values.out as string, {
    config: /^https?:\/\//i.test(positionals[0]) && values.config === DEFAULT_DATASETS_CONFIG ? undefined : config,
    sha256: values.sha256 as string | undefined,
    extract: values["no-extract"] ? false : undefined,
    url: values.url as string | undefined,
    tries,
  });
  const d = r.download;
  if (d) {
    const how = d.skipped
      ? "already present"
      : d.resumedFrom > 0
      ? `downloaded (resumed at ${formatBytes(d.resumedFrom)})`
      : "downloaded";
    console.log(`${d.path}: ${how}, ${formatBytes(d.bytes)}`);
  }
  if (r.verified) console.log(`sha256 ${r.sha256} verified`);
  else {
    console.log(`sha256 ${r.sha256} NOT verified: no checksum known for ${r.dataset.name}`);
    console.log(
      `  to check it from now on, pass --sha256 ${r.sha256} or add "sha256: ${r.sha256}" to its entry in ${config}`,
    );
  }
  if (r.extractedTo) console.log(`${r.extractSkipped ? "already extracted in" : "extracted to"} ${r.extractedTo}`);
}

if (import.meta.main) await runTask(main);
