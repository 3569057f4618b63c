/**
 * Resumable, verified downloads and the known-dataset registry behind
 * `deno task download`.
 *
 * {@linkcode downloadFile} streams a URL into a partial file beside the
 * target (`DIR/.NAME.part`), resumes it with a `Range` request on the next
 * try or run, hashes it with SHA-256 as it goes, and renames it into place
 * only when complete and, if a checksum is known, matching. Dropped
 * connections and 5xx answers are retried with backoff a bounded number of
 * times; after that the partial file stays for the next run.
 *
 * {@linkcode fetchDataset} looks a name up in `configs/datasets.yaml` (or
 * takes a URL), downloads it into an output folder and extracts archives
 * with {@linkcode extractArchive} into `OUT/NAME/`.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { createHash, type Hash } from "node:crypto";
import { InputError } from "./errors.ts";
import { formatBytes, Progress, type ProgressOptions } from "./progress.ts";
import { loadConfig, type Spec } from "./config.ts";
import { archiveKind, extractArchive, looksLikeArchive, readExtractMarker } from "./archive.ts";

/** Options for {@linkcode downloadFile}. */
export interface DownloadOptions {
  /** Expected SHA-256 (hex). Without it the hash is computed and reported but not checked. */
  sha256?: string;
  /** Attempts per run before giving up (default 3). */
  tries?: number;
  /** Delay before the first retry in ms, doubled on each further retry (default 1000). */
  backoffMs?: number;
  /** Abort an attempt when no data arrives for this long, in ms (default 60000). */
  idleTimeoutMs?: number;
  /** Progress bar options; `{ quiet: true }` silences it. */
  progress?: ProgressOptions;
  /** Where status lines go (skips, resumes, retries); stderr by default. */
  log?: (line: string) => void;
}

/** What {@linkcode downloadFile} did. */
export interface DownloadResult {
  url: string;
  /** The final file. */
  path: string;
  bytes: number;
  /** SHA-256 of the final file (hex). */
  sha256: string;
  /** True when the hash was checked against an expected value. */
  verified: boolean;
  /** True when the file was already in place and nothing was transferred. */
  skipped: boolean;
  /** Bytes reused from an earlier partial download (0 when none). */
  resumedFrom: number;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Normalizes an expected checksum, with a clear error when it is not 64 hex digits. */
export function parseSha256(text: string | undefined | null, what = "sha256"): string | undefined {
  if (text === undefined || text === null || text === "") return undefined;
  const t = text.trim().toLowerCase();
  if (!HEX64.test(t)) throw new InputError(`${what} must be 64 hexadecimal digits, got ${JSON.stringify(text)}`);
  return t;
}

/** Feeds a file to a SHA-256 hash, streaming, and returns the hash (still open for more data). */
async function hashFile(file: string, hash: Hash = createHash("sha256")): Promise<Hash> {
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Uint8Array);
  return hash;
}

/**
 * SHA-256 of a file in hex, remembered in a hidden `.NAME.sha256` file beside
 * it (keyed by size and mtime) so reruns over multi-GB archives are instant.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/a.txt`, "abc");
 * assertEquals(await fileSha256(`${dir}/a.txt`), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export async function fileSha256(file: string): Promise<string> {
  const st = await fs.promises.stat(file);
  const cache = hashCacheName(file);
  try {
    const c = JSON.parse(await fs.promises.readFile(cache, "utf8"));
    if (c.size === st.size && c.mtimeMs === st.mtimeMs && HEX64.test(c.sha256)) return c.sha256;
  } catch {
    // no cache or an unreadable one: hash below
  }
  const sha = (await hashFile(file)).digest("hex");
  await rememberSha256(file, sha);
  return sha;
}

function hashCacheName(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.sha256`);
}

async function rememberSha256(file: string, sha256: string): Promise<void> {
  const st = await fs.promises.stat(file);
  await fs.promises.writeFile(
    hashCacheName(file),
    JSON.stringify({ size: st.size, mtimeMs: st.mtimeMs, sha256 }) + "\n",
  );
}

/** A failure worth another attempt: a dropped connection, a 5xx, a stall. */
class RetryableError extends Error {}

/** Parses `Content-Range: bytes START-END/TOTAL` (or `bytes *\/TOTAL`). */
export function parseContentRange(
  value: string | null,
): { start?: number; end?: number; total?: number } | undefined {
  if (!value) return undefined;
  const m = /^bytes\s+(?:(\d+)-(\d+)|\*)\/(\d+|\*)$/i.exec(value.trim());
  if (!m) return undefined;
  return {
    start: m[1] === undefined ? undefined : Number(m[1]),
    end: m[2] === undefined ? undefined : Number(m[2]),
    total: m[3] === "*" ? undefined : Number(m[3]),
  };
}

interface PartMeta {
  url: string;
  etag?: string;
  lastModified?: string;
  total?: number;
}

interface PartState {
  part: string;
  metaFile: string;
  meta: PartMeta;
  offset: number;
  hash: Hash;
  /** Bytes already on disk when this run started. */
  resumedFrom: number;
}

function partNames(dest: string): { part: string; metaFile: string } {
  const part = path.join(path.dirname(dest), `.${path.basename(dest)}.part`);
  return { part, metaFile: `${part}.json` };
}

async function resetPart(state: PartState, url: string): Promise<void> {
  await fs.promises.writeFile(state.part, new Uint8Array(0));
  state.offset = 0;
  state.hash = createHash("sha256");
  state.meta = { url };
  state.resumedFrom = 0;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Moves `file` to `DEST.bad` (or `DEST.bad.N`), where a user will see it, and returns the new name. */
async function moveAside(file: string, dest: string): Promise<string> {
  let bad = `${dest}.bad`;
  for (let i = 1; fs.existsSync(bad); i++) bad = `${dest}.bad.${i}`;
  await fs.promises.rename(file, bad);
  return bad;
}

/**
 * Downloads `url` to `dest`, resuming a partial download, verifying the
 * SHA-256 when `opts.sha256` is given and placing the file atomically. When
 * `dest` already exists (and matches the checksum, if one is given) nothing
 * is transferred.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, () => new Response("hello"));
 * const dir = Deno.makeTempDirSync();
 * try {
 *   const url = `http://127.0.0.1:${server.addr.port}/hello.txt`;
 *   const r = await downloadFile(url, `${dir}/hello.txt`, { progress: { quiet: true }, log: () => {} });
 *   assertEquals(Deno.readTextFileSync(`${dir}/hello.txt`), "hello");
 *   assertEquals(r.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
 * } finally {
 *   await server.shutdown();
 *   Deno.removeSync(dir, { recursive: true });
 * }
 * ```
 */
export async function downloadFile(url: string, dest: string, opts: DownloadOptions = {}): Promise<DownloadResult> {
  const expected = parseSha256(opts.sha256);
  const log = opts.log ?? ((s: string) => console.error(s));
  const tries = Math.max(1, opts.tries ?? 3);
  const backoff = opts.backoffMs ?? 1000;
  await fs.promises.mkdir(path.dirname(dest), { recursive: true });

  if (fs.existsSync(dest)) {
    const sha = await fileSha256(dest);
    const bytes = (await fs.promises.stat(dest)).size;
    if (!expected || sha === expected) {
      log(`${dest} is already present${expected ? " and matches its sha256" : ""}; skipping the transfer`);
      return { url, path: dest, bytes, sha256: sha, verified: !!expected, skipped: true, resumedFrom: 0 };
    }
    const bad = await moveAside(dest, dest);
    await fs.promises.rm(hashCacheName(dest), { force: true });
    log(`${dest} does not match the expected sha256 (got ${sha}); moved it to ${bad} and downloading again`);
  }

  const { part, metaFile } = partNames(dest);
  const state: PartState = { part, metaFile, meta: { url }, offset: 0, hash: createHash("sha256"), resumedFrom: 0 };
  if (fs.existsSync(part)) {
    let meta: PartMeta | undefined;
    try {
      meta = JSON.parse(await fs.promises.readFile(metaFile, "utf8"));
    } catch {
      meta = undefined;
    }
    if (meta?.url === url) {
      state.meta = meta;
      state.offset = (await fs.promises.stat(part)).size;
      state.resumedFrom = state.offset;
      if (state.offset > 0) {
        // The hash must cover the whole file, so feed it what is already there.
        log(`resuming ${path.basename(dest)} from ${state.offset} bytes (hashing the partial file first)`);
        state.hash = await hashFile(part);
      }
    } else {
      log(`discarding ${part}: it belongs to ${meta?.url ?? "an unknown URL"}`);
      await resetPart(state, url);
    }
  } else {
    await resetPart(state, url);
  }

  for (let attempt = 1;; attempt++) {
    try {
      await transferOnce(url, dest, state, opts, log);
      break;
    } catch (e) {
      const retryable = e instanceof RetryableError;
      const msg = (e as Error).message;
      if (state.offset === 0 && (!retryable || attempt >= tries)) {
        // Nothing worth resuming: leave no empty partial file behind.
        await fs.promises.rm(part, { force: true });
        await fs.promises.rm(metaFile, { force: true });
      }
      const kept = state.offset > 0
        ? `; the partial file ${part} (${state.offset} bytes) is kept: run again to resume`
        : "";
      if (!retryable) {
        if (e instanceof InputError) throw new InputError(msg + kept, { cause: e });
        throw e;
      }
      if (attempt >= tries) {
        throw new InputError(
          `download of ${url} failed after ${attempt} ${attempt === 1 ? "try" : "tries"}: ${msg}${kept}`,
          {
            cause: e,
          },
        );
      }
      const wait = backoff * 2 ** (attempt - 1);
      log(`${msg}; retrying in ${(wait / 1000).toFixed(1)} s (try ${attempt + 1} of ${tries})`);
      await sleep(wait);
    }
  }

  const sha = state.hash.digest("hex");
  await fs.promises.rm(metaFile, { force: true });
  if (expected && sha !== expected) {
    const bad = await moveAside(part, dest);
    throw new InputError(
      `checksum mismatch for ${url}: expected sha256 ${expected}, got ${sha}; the download was moved to ${bad} ` +
        `and not placed at ${dest}`,
    );
  }
  // The part file lives beside dest, so this rename is atomic.
  await fs.promises.rename(part, dest);
  await rememberSha256(dest, sha);
  return {
    url,
    path: dest,
    bytes: state.offset,
    sha256: sha,
    verified: !!expected,
    skipped: false,
    resumedFrom: state.resumedFrom,
  };
}

/** One HTTP request: appends what arrives to the part file; throws on anything short of completion. */
async function transferOnce(
  url: string,
  dest: string,
  state: PartState,
  opts: DownloadOptions,
  log: (s: string) => void,
): Promise<void> {
  if (state.meta.total !== undefined && state.offset === state.meta.total) return;
  if (state.meta.total !== undefined && state.offset > state.meta.total) {
    log(`${state.part} is larger than the file on the server; starting over`);
    await resetPart(state, url);
  }
  const headers: Record<string, string> = {
    // Byte offsets only make sense on the raw body, so ask for no compression.
    "accept-encoding": "identity",
  };
  if (state.offset > 0) {
    headers.range = `bytes=${state.offset}-`;
    // If-Range makes a server that changed the file send all of it (200) rather than a mismatched tail.
    const validator = state.meta.etag && !state.meta.etag.startsWith("W/") ? state.meta.etag : state.meta.lastModified;
    if (validator) headers["if-range"] = validator;
  }
  const idleMs = opts.idleTimeoutMs ?? 60_000;
  const ac = new AbortController();
  let timer = setTimeout(() => ac.abort(), idleMs);
  const touch = () => {
    clearTimeout(timer);
    timer = setTimeout(() => ac.abort(), idleMs);
  };
  let bar: Progress | undefined;
  let fh: fs.promises.FileHandle | undefined;
  let res: Response | undefined;
  try {
    try {
      res = await fetch(url, { headers, signal: ac.signal });
    } catch (e) {
      throw new RetryableError(
        ac.signal.aborted
          ? `no answer from ${url} for ${idleMs / 1000} s`
          : `cannot reach ${url}: ${(e as Error).message}`,
      );
    }
    if (res.status === 416) {
      const cr = parseContentRange(res.headers.get("content-range"));
      await res.body?.cancel();
      if (state.offset > 0 && cr?.total === state.offset) {
        // The partial file already holds every byte.
        state.meta.total = state.offset;
        return;
      }
      if (state.offset > 0) {
        await resetPart(state, url);
        throw new RetryableError(`${url} refused the range request (HTTP 416); starting over`);
      }
      throw new InputError(`HTTP 416 from ${url}`);
    }
    if (!res.ok) {
      await res.body?.cancel();
      const text = `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""} from ${url}`;
      if (res.status >= 500 || res.status === 429 || res.status === 408) throw new RetryableError(text);
      throw new InputError(text);
    }
    if (state.offset > 0 && res.status === 200) {
      log(
        `the server ignored the range request (or the file changed); downloading ${path.basename(dest)} from the start`,
      );
      await resetPart(state, url);
    }
    let total: number | undefined;
    if (res.status === 206) {
      const raw = res.headers.get("content-range");
      const cr = parseContentRange(raw);
      if (!cr || cr.start !== state.offset || (res.headers.get("content-type") ?? "").startsWith("multipart/")) {
        await res.body?.cancel();
        await resetPart(state, url);
        throw new RetryableError(
          `${url} answered bytes=${state.offset}- with Content-Range ${JSON.stringify(raw)}; starting over`,
        );
      }
      total = cr.total;
    } else {
      const len = res.headers.get("content-length");
      total = len !== null && /^\d+$/.test(len) ? Number(len) : undefined;
    }
    state.meta = {
      url,
      etag: res.headers.get("etag") ?? undefined,
      lastModified: res.headers.get("last-modified") ?? undefined,
      total,
    };
    await fs.promises.writeFile(state.metaFile, JSON.stringify(state.meta) + "\n");
    if (!res.body) throw new RetryableError(`empty response body from ${url}`);

    const startedAt = state.offset;
    bar = new Progress(`download ${path.basename(dest)}`, total !== undefined ? total - startedAt : 0, {
      bytes: true,
      ...opts.progress,
    });
    if (startedAt > 0) bar.tick(0, `resumed at ${formatBytes(startedAt)}`);
    fh = await fs.promises.open(state.part, "a");
    try {
      for await (const chunk of res.body) {
        touch();
        await fh.write(chunk);
        state.hash.update(chunk);
        state.offset += chunk.length;
        bar.tick(chunk.length);
      }
    } catch (e) {
      throw new RetryableError(
        ac.signal.aborted
          ? `no data from ${url} for ${idleMs / 1000} s after ${state.offset} bytes`
          : `connection to ${url} dropped after ${state.offset}${total !== undefined ? ` of ${total}` : ""} bytes (${
            (e as Error).message
          })`,
      );
    }
    if (total !== undefined && state.offset < total) {
      throw new RetryableError(`connection to ${url} closed after ${state.offset} of ${total} bytes`);
    }
    if (total !== undefined && state.offset > total) {
      await resetPart(state, url);
      throw new RetryableError(`${url} sent more bytes than announced; starting over`);
    }
    state.meta.total = state.offset;
  } finally {
    clearTimeout(timer);
    bar?.done();
    await fh?.close();
  }
}

// ---------------------------------------------------------------- datasets

/** One entry of `configs/datasets.yaml`. */
export interface DatasetEntry {
  /** Short name used on the command line and as the extraction folder. */
  name: string;
  url: string;
  /** Expected SHA-256, or null when unknown. */
  sha256: string | null;
  /** Extract the archive after downloading. */
  extract: boolean;
  description: string;
}

/** Schema of `configs/datasets.yaml`. */
export const DATASETS_SPEC: Spec = {
  type: "object",
  fields: {
    datasets: {
      type: "array",
      minLength: 1,
      doc: "known datasets",
      items: {
        type: "object",
        fields: {
          name: { type: "string", doc: "name used on the command line" },
          url: { type: "string", doc: "http(s) URL" },
          sha256: { type: "string", nullable: true, doc: "expected SHA-256 in hex; null when unknown" },
          extract: { type: "boolean", default: true, doc: "extract the archive into OUT/NAME" },
          description: { type: "string", default: "", doc: "one line for --list" },
        },
      },
    },
  },
};

/** Default location of the dataset registry: the workbench's own `configs/datasets.yaml`, from any working folder. */
export const DEFAULT_DATASETS_CONFIG = path.relative(
  ".",
  fileURLToPath(new URL("../configs/datasets.yaml", import.meta.url)),
);

/**
 * Reads and validates a datasets file: unknown keys, duplicate names, bad
 * URLs and malformed checksums are errors naming the entry.
 */
export function loadDatasets(file = DEFAULT_DATASETS_CONFIG): DatasetEntry[] {
  const cfg = loadConfig<{ datasets: DatasetEntry[] }>(file, DATASETS_SPEC);
  const seen = new Set<string>();
  return cfg.datasets.map((d, i) => {
    const where = `datasets[${i}]`;
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(d.name)) {
      throw new InputError(`name ${JSON.stringify(d.name)} may hold only letters, digits, "_", "." and "-"`, {
        file,
        where,
      });
    }
    if (seen.has(d.name)) throw new InputError(`duplicate name ${JSON.stringify(d.name)}`, { file, where });
    seen.add(d.name);
    if (!/^https?:\/\//.test(d.url)) throw new InputError(`url must start with http:// or https://`, { file, where });
    return { ...d, sha256: parseSha256(d.sha256, `${where}.sha256`) ?? null };
  });
}

/** Derives a dataset name from a URL: the file name without its archive extension. */
function nameFromUrl(url: string): string {
  let base = "";
  try {
    base = decodeURIComponent(path.posix.basename(new URL(url).pathname));
  } catch {
    throw new InputError(`not a valid URL: ${JSON.stringify(url)}`);
  }
  const stem = base.replace(/\.(zip|tar\.gz|tgz|tar)$/i, "");
  return /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(stem) ? stem : "download";
}

/**
 * Turns a dataset name or an http(s) URL into an entry. An unknown name is an
 * error listing the known ones.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals, throws } from "node:assert";
 * const known = [{ name: "tiny", url: "http://example.invalid/tiny.zip", sha256: null, extract: true, description: "" }];
 * assertEquals(resolveDataset("tiny", known).url, "http://example.invalid/tiny.zip");
 * assertEquals(resolveDataset("https://example.invalid/a/b.tar.gz", known).name, "b");
 * throws(() => resolveDataset("huge", known), /known: tiny/);
 * ```
 */
export function resolveDataset(nameOrUrl: string, datasets: DatasetEntry[]): DatasetEntry {
  if (/^https?:\/\//i.test(nameOrUrl)) {
    const name = nameFromUrl(nameOrUrl);
    return {
      name,
      url: nameOrUrl,
      sha256: null,
      extract: looksLikeArchive(new URL(nameOrUrl).pathname),
      description: "",
    };
  }
  const hit = datasets.find((d) => d.name === nameOrUrl);
  if (!hit) {
    throw new InputError(
      `unknown dataset ${JSON.stringify(nameOrUrl)}; known: ${
        datasets.map((d) => d.name).join(", ")
      } (or pass an http(s) URL)`,
    );
  }
  return hit;
}

/** Options for {@linkcode fetchDataset}. */
export interface FetchDatasetOptions extends DownloadOptions {
  /** Datasets file (default `configs/datasets.yaml`); ignored when `datasets` is given. */
  config?: string;
  /** The registry, already loaded. */
  datasets?: DatasetEntry[];
  /** Override the entry's `extract` setting (e.g. `false` for --no-extract). */
  extract?: boolean;
  /**
   * Fetch a named dataset from this URL instead (a mirror): name, checksum and extraction folder stay the entry's.
   */
  url?: string;
}

/** What {@linkcode fetchDataset} did. */
export interface FetchDatasetResult {
  dataset: DatasetEntry;
  /** The download, or undefined when the archive was gone but its extraction already done. */
  download?: DownloadResult;
  /** SHA-256 of the archive. */
  sha256: string;
  /** True when the checksum was checked against a known value. */
  verified: boolean;
  /** The extraction folder, when extracting. */
  extractedTo?: string;
  /** True when the extraction folder was already complete. */
  extractSkipped?: boolean;
}

/**
 * Downloads a known dataset (by name) or any http(s) URL into `outDir`,
 * checks it, and extracts archives into `outDir/NAME/`. Safe to rerun: a
 * complete file is not fetched again and a finished extraction (marked by
 * its `.extracted.json`) is not repeated.
 */
export async function fetchDataset(
  nameOrUrl: string,
  outDir: string,
  opts: FetchDatasetOptions = {},
): Promise<FetchDatasetResult> {
  const log = opts.log ?? ((s: string) => console.error(s));
  const datasets = opts.datasets ??
    (/^https?:\/\//i.test(nameOrUrl) && !opts.config ? [] : loadDatasets(opts.config ?? DEFAULT_DATASETS_CONFIG));
  const entry = resolveDataset(nameOrUrl, datasets);
  if (opts.url !== undefined && !/^https?:\/\//i.test(opts.url)) {
    throw new InputError(`--url must be an http(s) URL, got ${JSON.stringify(opts.url)}`);
  }
  const dataset = opts.url ? { ...entry, url: opts.url } : entry;
  const flagSha = parseSha256(opts.sha256, "--sha256");
  if (flagSha && dataset.sha256 && flagSha !== dataset.sha256) {
    throw new InputError(
      `--sha256 ${flagSha} disagrees with the checksum ${dataset.sha256} configured for ${dataset.name}`,
    );
  }
  const expected = flagSha ?? dataset.sha256 ?? undefined;
  let base = "";
  try {
    base = decodeURIComponent(path.posix.basename(new URL(dataset.url).pathname));
  } catch {
    throw new InputError(`not a valid URL: ${JSON.stringify(dataset.url)}`);
  }
  if (!/^[^/\\]+$/.test(base) || base === "." || base === "..") base = dataset.name;
  const file = path.join(outDir, base);
  const extract = opts.extract ?? dataset.extract;
  const extractDir = path.join(outDir, dataset.name);

  // The archive may have been deleted to save space after a finished extraction.
  const marker = extract ? readExtractMarker(extractDir) : undefined;
  if (
    marker && !fs.existsSync(file) && typeof marker.sha256 === "string" && (!expected || marker.sha256 === expected)
  ) {
    log(`${dataset.name} is already extracted in ${extractDir}; skipping`);
    return {
      dataset,
      sha256: marker.sha256,
      verified: !!expected,
      extractedTo: extractDir,
      extractSkipped: true,
    };
  }

  const download = await downloadFile(dataset.url, file, { ...opts, sha256: expected, log });
  const result: FetchDatasetResult = { dataset, download, sha256: download.sha256, verified: download.verified };
  if (!extract) return result;
  if (!(await archiveKind(file))) {
    if (looksLikeArchive(file)) throw new InputError(`not a zip, tar or tar.gz archive, cannot extract`, { file });
    log(`${file} is not an archive; nothing to extract`);
    return result;
  }
  result.extractedTo = extractDir;
  if (marker) {
    if (marker.sha256 === download.sha256) {
      log(`${file} is already extracted in ${extractDir}; skipping`);
      result.extractSkipped = true;
      return result;
    }
    throw new InputError(
      `${extractDir} holds an extraction of a different archive (sha256 ${marker.sha256}); remove it to extract ${file} again`,
    );
  }
  await extractArchive(file, extractDir, {
    marker: { url: dataset.url, sha256: download.sha256 },
    progress: opts.progress,
  });
  result.extractSkipped = false;
  return result;
}
