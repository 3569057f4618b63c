// Tests for lib/download.ts and tasks/download.ts against small HTTP servers
// on 127.0.0.1 started (and stopped) by each test. The server is a raw TCP
// listener so a test can cut a response off mid-body, as a dropped
// connection does. Archives are built in the test with lib/archive.ts.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import * as fs from "node:fs";
import * as path from "node:path";
import { createTar, createZip } from "../lib/archive.ts";
import { type DatasetEntry, downloadFile, fetchDataset, loadDatasets, parseContentRange } from "../lib/download.ts";
import { InputError } from "../lib/errors.ts";
import { assertRejectsError } from "./asserts.ts";

// ---------------------------------------------------------------- helpers

interface SeenRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
}

interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: Uint8Array;
  /** Send only this many body bytes, then close the socket. */
  dropAfter?: number;
}

interface TestServer {
  url: (p: string) => string;
  requests: SeenRequest[];
  close: () => Promise<void>;
}

/** A minimal HTTP/1.1 server: one request per connection, then the socket is closed. */
function startServer(handler: (req: SeenRequest) => Reply): TestServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const requests: SeenRequest[] = [];
  const open = new Set<Promise<void>>();
  const serveConn = async (conn: Deno.Conn) => {
    try {
      let head = "";
      const buf = new Uint8Array(4096);
      while (!head.includes("\r\n\r\n")) {
        const n = await conn.read(buf);
        if (n === null) return;
        head += new TextDecoder().decode(buf.subarray(0, n));
      }
      const [start, ...lines] = head.split("\r\n\r\n")[0].split("\r\n");
      const [method, p] = start.split(" ");
      const headers: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(":");
        headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      const req = { method, path: p, headers };
      requests.push(req);
      const r = handler(req);
      const body = r.body ?? new Uint8Array(0);
      const hs = { "content-length": String(body.length), ...r.headers, connection: "close" };
      const text = `HTTP/1.1 ${r.status} ${r.status < 300 ? "OK" : "Error"}\r\n` +
        Object.entries(hs).map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n";
      const send = async (b: Uint8Array) => {
        for (let o = 0; o < b.length;) o += await conn.write(b.subarray(o));
      };
      await send(new TextEncoder().encode(text));
      if (method !== "HEAD") await send(body.subarray(0, r.dropAfter ?? body.length));
    } catch {
      // the client went away; nothing to do
    } finally {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        const p: Promise<void> = serveConn(conn).finally(() => open.delete(p));
        open.add(p);
      }
    } catch {
      // listener closed
    }
  })();
  const port = (listener.addr as Deno.NetAddr).port;
  return {
    url: (p) => `http://127.0.0.1:${port}${p}`,
    requests,
    close: async () => {
      listener.close();
      await accepting;
      await Promise.all([...open]);
    },
  };
}

/** Serves `files` by path with Range support; `dropFirst` cuts the first N responses at half their body. */
function fileServer(
  files: Record<string, Uint8Array>,
  opts: { dropFirst?: number; ignoreRange?: boolean } = {},
): TestServer {
  let drops = opts.dropFirst ?? 0;
  return startServer((req) => {
    const data = files[req.path];
    if (!data) return { status: 404 };
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    let reply: Reply = { status: 200, body: data };
    if (m && !opts.ignoreRange) {
      const from = Number(m[1]);
      if (from >= data.length) return { status: 416, headers: { "content-range": `bytes */${data.length}` } };
      reply = {
        status: 206,
        headers: { "content-range": `bytes ${from}-${data.length - 1}/${data.length}` },
        body: data.subarray(from),
      };
    }
    if (drops > 0) {
      drops--;
      reply.dropAfter = Math.floor(reply.body!.length / 2);
    }
    return reply;
  });
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Deterministic pseudo-random bytes (incompressible, so nothing shrinks them in transit). */
function payload(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

function tempDir(): string {
  return Deno.makeTempDirSync({ prefix: "download_test_" });
}

/** Quiet, fast options: no progress bar, millisecond backoff, log captured. */
function quietOpts(logs: string[] = []) {
  return { progress: { quiet: true }, backoffMs: 1, log: (s: string) => logs.push(s) };
}

const DATA = payload(200_000);

// ---------------------------------------------------------------- downloadFile

Deno.test("a normal transfer places the file atomically, reports its sha256, and a rerun skips it", async () => {
  const server = fileServer({ "/data.bin": DATA });
  const dir = tempDir();
  try {
    const dest = `${dir}/data.bin`;
    const r = await downloadFile(server.url("/data.bin"), dest, quietOpts());
    assertEquals(Deno.readFileSync(dest), DATA);
    assertEquals([r.sha256, r.bytes, r.verified, r.skipped, r.resumedFrom], [
      sha256(DATA),
      DATA.length,
      false,
      false,
      0,
    ]);
    assertEquals(server.requests[0].headers["accept-encoding"], "identity");
    // No partial or temporary file is left beside it (only the hash cache).
    assertEquals(fs.readdirSync(dir).sort(), [".data.bin.sha256", "data.bin"]);

    const logs: string[] = [];
    const again = await downloadFile(server.url("/data.bin"), dest, { ...quietOpts(logs), sha256: sha256(DATA) });
    assertEquals([again.skipped, again.verified, server.requests.length], [true, true, 1]);
    assert(logs.some((l) => l.includes("skipping the transfer")), logs.join("\n"));
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a connection dropped mid-transfer keeps the partial file, and the next run resumes with a Range request", async () => {
  const server = fileServer({ "/data.bin": DATA }, { dropFirst: 1 });
  const dir = tempDir();
  try {
    const dest = `${dir}/data.bin`;
    const err = await assertRejectsError(
      () => downloadFile(server.url("/data.bin"), dest, { ...quietOpts(), tries: 1 }),
      InputError,
      "dropped after",
      "run again to resume",
    );
    assert(!fs.existsSync(dest), err.message);
    const half = DATA.length / 2;
    assertEquals(fs.statSync(`${dir}/.data.bin.part`).size, half);

    const r = await downloadFile(server.url("/data.bin"), dest, { ...quietOpts(), sha256: sha256(DATA) });
    assertEquals(server.requests.length, 2);
    assertEquals(server.requests[1].headers.range, `bytes=${half}-`);
    assertEquals([r.resumedFrom, r.verified], [half, true]);
    assertEquals(Deno.readFileSync(dest), DATA);
    assert(!fs.existsSync(`${dir}/.data.bin.part`));
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a dropped connection is retried within the same run, resuming where it stopped", async () => {
  const server = fileServer({ "/data.bin": DATA }, { dropFirst: 1 });
  const dir = tempDir();
  try {
    const logs: string[] = [];
    const r = await downloadFile(server.url("/data.bin"), `${dir}/data.bin`, { ...quietOpts(logs), tries: 3 });
    assertEquals(r.sha256, sha256(DATA));
    assertEquals(server.requests.map((q) => q.headers.range), [undefined, `bytes=${DATA.length / 2}-`]);
    assert(logs.some((l) => l.includes("retrying in")), logs.join("\n"));
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a server that ignores Range makes the download start over instead of corrupting the file", async () => {
  const server = fileServer({ "/data.bin": DATA }, { dropFirst: 1, ignoreRange: true });
  const dir = tempDir();
  try {
    const logs: string[] = [];
    const r = await downloadFile(server.url("/data.bin"), `${dir}/data.bin`, { ...quietOpts(logs), tries: 2 });
    assertEquals(server.requests[1].headers.range, `bytes=${DATA.length / 2}-`);
    assertEquals([r.sha256, r.resumedFrom], [sha256(DATA), 0]);
    assertEquals(Deno.readFileSync(`${dir}/data.bin`), DATA);
    assert(logs.some((l) => l.includes("ignored the range request")), logs.join("\n"));
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a complete partial file answered with 416 is finished without transferring again", async () => {
  const server = fileServer({ "/data.bin": DATA });
  const dir = tempDir();
  try {
    // A run that received every byte but stopped before the rename.
    Deno.writeFileSync(`${dir}/.data.bin.part`, DATA);
    Deno.writeTextFileSync(`${dir}/.data.bin.part.json`, JSON.stringify({ url: server.url("/data.bin") }));
    const r = await downloadFile(server.url("/data.bin"), `${dir}/data.bin`, { ...quietOpts(), sha256: sha256(DATA) });
    assertEquals(server.requests.map((q) => q.headers.range), [`bytes=${DATA.length}-`]);
    assertEquals([r.verified, r.resumedFrom], [true, DATA.length]);
    assertEquals(Deno.readFileSync(`${dir}/data.bin`), DATA);
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("HTTP 500 names the URL and status, is retried a bounded number of times, and keeps the partial file", async () => {
  let calls = 0;
  const server = startServer(() => {
    calls++;
    // First a dropped transfer that leaves a partial file, then only errors.
    return calls === 1 ? { status: 200, body: DATA, dropAfter: 1000 } : { status: 500 };
  });
  const dir = tempDir();
  try {
    const url = server.url("/data.bin");
    await assertRejectsError(() => downloadFile(url, `${dir}/data.bin`, { ...quietOpts(), tries: 1 }), InputError);
    const err = await assertRejectsError(
      () => downloadFile(url, `${dir}/data.bin`, { ...quietOpts(), tries: 3 }),
      InputError,
      "HTTP 500",
      url,
      "after 3 tries",
      "is kept",
    );
    assertEquals(calls, 4, err.message);
    assertEquals(fs.statSync(`${dir}/.data.bin.part`).size, 1000);
    assert(!fs.existsSync(`${dir}/data.bin`));
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("HTTP 404 fails at once without retrying and leaves no empty partial file", async () => {
  const server = fileServer({});
  const dir = tempDir();
  try {
    await assertRejectsError(
      () => downloadFile(server.url("/missing.zip"), `${dir}/m.zip`, quietOpts()),
      InputError,
      "HTTP 404",
    );
    assertEquals([server.requests.length, fs.readdirSync(dir)], [1, []]);
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a checksum mismatch names expected and actual hashes and does not place the file", async () => {
  const server = fileServer({ "/data.bin": DATA });
  const dir = tempDir();
  try {
    const wrong = "0".repeat(64);
    await assertRejectsError(
      () => downloadFile(server.url("/data.bin"), `${dir}/data.bin`, { ...quietOpts(), sha256: wrong }),
      InputError,
      "checksum mismatch",
      `expected sha256 ${wrong}`,
      `got ${sha256(DATA)}`,
    );
    assert(!fs.existsSync(`${dir}/data.bin`));
    assertEquals(Deno.readFileSync(`${dir}/data.bin.bad`), DATA);
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("an existing file that fails the checksum is moved aside and downloaded again", async () => {
  const server = fileServer({ "/data.bin": DATA });
  const dir = tempDir();
  try {
    Deno.writeTextFileSync(`${dir}/data.bin`, "stale");
    const r = await downloadFile(server.url("/data.bin"), `${dir}/data.bin`, { ...quietOpts(), sha256: sha256(DATA) });
    assertEquals([r.skipped, r.verified], [false, true]);
    assertEquals(Deno.readTextFileSync(`${dir}/data.bin.bad`), "stale");
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("parseContentRange reads ranges and unknown totals", () => {
  assertEquals(parseContentRange("bytes 10-19/100"), { start: 10, end: 19, total: 100 });
  assertEquals(parseContentRange("bytes */100"), { start: undefined, end: undefined, total: 100 });
  assertEquals(parseContentRange("bytes 0-9/*")?.total, undefined);
  assertEquals(parseContentRange("items 0-9/10"), undefined);
});

// ---------------------------------------------------------------- datasets

function registryFile(dir: string, entries: Record<string, unknown>[]): string {
  const file = `${dir}/datasets.yaml`;
  Deno.writeTextFileSync(file, JSON.stringify({ datasets: entries })); // JSON is YAML
  return file;
}

Deno.test("fetchDataset downloads and extracts a zip into OUT/NAME, and a rerun skips both steps", async () => {
  const zip = createZip([{ name: "datasets/annotations/instances.json", data: '{"images":[]}' }]);
  const server = fileServer({ "/ssd_datasets.zip": zip });
  const dir = tempDir();
  try {
    const config = registryFile(dir, [{ name: "tiny", url: server.url("/ssd_datasets.zip"), sha256: null }]);
    const out = `${dir}/data`;
    const r = await fetchDataset("tiny", out, { ...quietOpts(), config });
    assertEquals([r.verified, r.sha256, r.extractSkipped], [false, sha256(zip), false]);
    assertEquals(r.extractedTo, path.join(out, "tiny"));
    assertEquals(Deno.readTextFileSync(`${out}/tiny/datasets/annotations/instances.json`), '{"images":[]}');
    assert(fs.existsSync(`${out}/ssd_datasets.zip`));

    const logs: string[] = [];
    const again = await fetchDataset("tiny", out, { ...quietOpts(logs), config, sha256: sha256(zip) });
    assertEquals([again.download?.skipped, again.extractSkipped, again.verified], [true, true, true]);
    assertEquals(server.requests.length, 1);
    assert(logs.some((l) => l.includes("already extracted")), logs.join("\n"));
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("fetchDataset takes a .tar.gz URL directly and extracts it", async () => {
  const tgz = gzipSync(createTar([{ name: "val/a.txt", data: "A" }, { name: "val/b.txt", data: "B" }]));
  const server = fileServer({ "/files/mini.tar.gz": tgz });
  const dir = tempDir();
  try {
    const r = await fetchDataset(server.url("/files/mini.tar.gz"), dir, quietOpts());
    assertEquals(r.dataset.name, "mini");
    assertEquals(Deno.readTextFileSync(`${dir}/mini/val/b.txt`), "B");
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("fetchDataset with extract false keeps only the archive", async () => {
  const zip = createZip([{ name: "a.txt", data: "A" }]);
  const server = fileServer({ "/a.zip": zip });
  const dir = tempDir();
  try {
    const r = await fetchDataset(server.url("/a.zip"), dir, { ...quietOpts(), extract: false });
    assertEquals([r.extractedTo, fs.readdirSync(dir).filter((f) => !f.startsWith(".")).sort()], [undefined, ["a.zip"]]);
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a downloaded archive with a ../ entry is rejected by name and nothing is extracted", async () => {
  const zip = createZip([{ name: "ok.txt", data: "fine" }, { name: "../evil.txt", data: "pwned" }]);
  const server = fileServer({ "/bad.zip": zip });
  const dir = tempDir();
  try {
    await assertRejectsError(
      () => fetchDataset(server.url("/bad.zip"), `${dir}/out`, quietOpts()),
      InputError,
      '"../evil.txt"',
    );
    assert(!fs.existsSync(`${dir}/evil.txt`) && !fs.existsSync(`${dir}/out/evil.txt`));
    assertEquals(fs.readdirSync(`${dir}/out`).filter((f) => !f.startsWith(".")), ["bad.zip"]);
    assert(!fs.readdirSync(`${dir}/out`).some((f) => f.endsWith(".tmp")));
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("an unknown dataset name is an error listing the known names", async () => {
  const dir = tempDir();
  try {
    const config = registryFile(dir, [
      { name: "alpha", url: "http://127.0.0.1:9/a.zip" },
      { name: "beta", url: "http://127.0.0.1:9/b.zip" },
    ]);
    await assertRejectsError(
      () => fetchDataset("gamma", dir, { ...quietOpts(), config }),
      InputError,
      '"gamma"',
      "alpha, beta",
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the datasets file rejects unknown keys, duplicate names and malformed checksums", () => {
  const dir = tempDir();
  try {
    const bad = (entries: Record<string, unknown>[], text: string) => {
      const file = registryFile(dir, entries);
      try {
        loadDatasets(file);
      } catch (e) {
        assert(e instanceof InputError && e.message.includes(text), `expected "${text}" in ${e}`);
        return;
      }
      throw new Error(`expected an error mentioning ${text}`);
    };
    bad([{ name: "a", url: "http://x/a.zip", sha265: "00" }], "sha265");
    bad([{ name: "a", url: "http://x/a.zip" }, { name: "a", url: "http://x/b.zip" }], "duplicate name");
    bad([{ name: "a", url: "http://x/a.zip", sha256: "xyz" }], "64 hexadecimal digits");
    bad([{ name: "a", url: "ftp://x/a.zip" }], "http://");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the shipped configs/datasets.yaml lists COCO 2017 and the tutorial archive", () => {
  const file = new URL("../configs/datasets.yaml", import.meta.url).pathname;
  const byName = new Map<string, DatasetEntry>(loadDatasets(file).map((d) => [d.name, d]));
  const urls = [...byName.values()].map((d) => d.url);
  for (const u of ["zips/train2017.zip", "zips/val2017.zip", "annotations/annotations_trainval2017.zip"]) {
    assert(urls.includes(`http://images.cocodataset.org/${u}`), u);
  }
  assert(urls.some((u) => u.endsWith("/notebook/datasets/ssd_datasets.zip")));
  for (const d of byName.values()) assert(d.description.length > 0, d.name);
});

// ---------------------------------------------------------------- the task

Deno.test("deno task download fetches a URL, prints the unverified sha256, and resumes after a drop", async () => {
  const zip = createZip([{ name: "v/a.txt", data: "x".repeat(50_000), deflate: false }]);
  const server = fileServer({ "/pack.zip": zip }, { dropFirst: 1 });
  const dir = tempDir();
  const task = new URL("../tasks/download.ts", import.meta.url).pathname;
  const run = async (...args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", task, ...args],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  };
  try {
    const url = server.url("/pack.zip");
    // With one try, the drop ends the run: one clear error line, partial file kept.
    const first = await run(url, "--out", dir, "--tries", "1");
    assertEquals(first.code, 1, first.stderr);
    assert(/error: download of .* failed after 1 try: .*run again to resume/.test(first.stderr), first.stderr);
    const second = await run(url, "--out", dir);
    assertEquals(second.code, 0, second.stderr);
    assertEquals(server.requests.map((r) => r.headers.range), [undefined, `bytes=${Math.floor(zip.length / 2)}-`]);
    assert(second.stdout.includes(`sha256 ${sha256(zip)} NOT verified`), second.stdout);
    assert(second.stdout.includes(`extracted to ${path.join(dir, "pack")}`), second.stdout);
    assertEquals(Deno.readTextFileSync(`${dir}/pack/v/a.txt`).length, 50_000);
    const third = await run(url, "--out", dir, "--sha256", sha256(zip), "--no-extract");
    assertEquals(third.code, 0, third.stderr);
    assert(third.stdout.includes("already present") && third.stdout.includes("verified"), third.stdout);
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});
