// Tests for lib/archive.ts. Every archive is built in the test with the
// writers from lib/archive.ts (checked against Info-ZIP and GNU tar when they
// were written), so no external tools or fixture files are needed.
import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert";
import { gzipSync } from "node:zlib";
import * as fs from "node:fs";
import * as path from "node:path";
import { Buffer } from "node:buffer";
import {
  type ArchiveEntry,
  archiveKind,
  crc32,
  createTar,
  createZip,
  EXTRACT_MARKER,
  extractArchive,
  listZip,
  readExtractMarker,
  safeEntryPath,
} from "../lib/archive.ts";
import { InputError } from "../lib/errors.ts";

const quiet = { progress: { quiet: true } };

/** Awaits `fn`, expecting it to throw `cls` with `text` in its message; returns the error. */
async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  cls: new (...args: never[]) => E,
  text = "",
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    assert(e instanceof cls, `expected ${cls.name}, got ${e}`);
    assert(e.message.includes(text), `expected "${text}" in: ${e.message}`);
    return e;
  }
  throw new Error(`expected ${cls.name}, but nothing was thrown`);
}

function tempDir(): string {
  return Deno.makeTempDirSync({ prefix: "archive_test_" });
}

/** Everything under `dir`, as sorted relative paths (symlinks not followed). */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      out.push(e.isDirectory() ? `${r}/` : e.isSymbolicLink() ? `${r}@` : r);
      if (e.isDirectory()) walk(r);
    }
  };
  walk("");
  return out.sort();
}

const SAMPLE: ArchiveEntry[] = [
  { name: "data/", type: "dir" },
  { name: "data/hello.txt", data: "hello world\n" },
  { name: "data/stored.bin", data: new Uint8Array(3000).map((_, i) => i % 256), deflate: false },
  { name: "data/deep/nested/note.md", data: "# note\n" },
  { name: "data/link.txt", type: "symlink", target: "hello.txt" },
];

function checkSample(dest: string): void {
  assertEquals(Deno.readTextFileSync(`${dest}/data/hello.txt`), "hello world\n");
  assertEquals(Deno.readFileSync(`${dest}/data/stored.bin`), new Uint8Array(3000).map((_, i) => i % 256));
  assertEquals(Deno.readTextFileSync(`${dest}/data/deep/nested/note.md`), "# note\n");
  assertEquals(Deno.readLinkSync(`${dest}/data/link.txt`), "hello.txt");
  assertEquals(Deno.readTextFileSync(`${dest}/data/link.txt`), "hello world\n");
}

Deno.test("crc32 matches the standard check value", () => {
  assertEquals(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assertEquals(crc32(new Uint8Array(0)), 0);
});

Deno.test("safeEntryPath accepts local names and rejects escaping or absolute ones", () => {
  assertEquals(safeEntryPath("a/b.txt"), "a/b.txt");
  assertEquals(safeEntryPath("./a//b/"), "a/b");
  assertEquals(safeEntryPath("a/../b.txt"), "b.txt");
  assertEquals(safeEntryPath("./"), "");
  for (const bad of ["../evil.txt", "a/../../evil.txt", "/etc/passwd", "..\\evil.txt", "C:/x.txt", "a\0b"]) {
    assertThrows(
      () => safeEntryPath(bad),
      (e: Error) => e instanceof InputError && e.message.includes(JSON.stringify(bad)),
    );
  }
});

Deno.test("a zip with folders, stored and deflated files and a symlink extracts intact with a marker", async () => {
  const dir = tempDir();
  try {
    Deno.writeFileSync(`${dir}/a.zip`, createZip(SAMPLE));
    assertEquals(await archiveKind(`${dir}/a.zip`), "zip");
    assertEquals((await listZip(`${dir}/a.zip`)).map((e) => e.name), SAMPLE.map((e) => e.name));
    const r = await extractArchive(`${dir}/a.zip`, `${dir}/out`, { ...quiet, marker: { sha256: "abc" } });
    assertEquals([r.kind, r.files, r.links], ["zip", 3, 1]);
    checkSample(`${dir}/out`);
    assertEquals(readExtractMarker(`${dir}/out`)?.sha256, "abc");
    // Only the archive and the result: no temporary folder left behind.
    assertEquals(fs.readdirSync(dir).sort(), ["a.zip", "out"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a ZIP64 archive is read through its ZIP64 end records", async () => {
  const dir = tempDir();
  try {
    Deno.writeFileSync(`${dir}/a.zip`, createZip(SAMPLE, { zip64: true }));
    await extractArchive(`${dir}/a.zip`, `${dir}/out`, quiet);
    checkSample(`${dir}/out`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a tar.gz with a long pax name, folders and a symlink extracts intact", async () => {
  const dir = tempDir();
  try {
    const long = `data/${"x".repeat(120)}/file.txt`;
    Deno.writeFileSync(`${dir}/a.tar.gz`, gzipSync(createTar([...SAMPLE, { name: long, data: "long" }])));
    assertEquals(await archiveKind(`${dir}/a.tar.gz`), "tar.gz");
    const r = await extractArchive(`${dir}/a.tar.gz`, `${dir}/out`, quiet);
    assertEquals([r.kind, r.files, r.links], ["tar.gz", 4, 1]);
    checkSample(`${dir}/out`);
    assertEquals(Deno.readTextFileSync(`${dir}/out/${long}`), "long");
    assert(fs.existsSync(`${dir}/out/${EXTRACT_MARKER}`));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a plain tar extracts too", async () => {
  const dir = tempDir();
  try {
    Deno.writeFileSync(`${dir}/a.tar`, createTar(SAMPLE));
    assertEquals(await archiveKind(`${dir}/a.tar`), "tar");
    await extractArchive(`${dir}/a.tar`, `${dir}/out`, quiet);
    checkSample(`${dir}/out`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/**
 * Extracts `bytes` (written as `name`) into DIR/target/out and expects a
 * rejection naming `entry`; then checks nothing at all was written: the
 * target folder holds only the archive and DIR holds only target/.
 */
async function expectRejected(bytes: Uint8Array, name: string, entry: string, extra: RegExp = /unsafe/): Promise<void> {
  const dir = tempDir();
  try {
    const target = `${dir}/target`;
    fs.mkdirSync(target);
    Deno.writeFileSync(`${target}/${name}`, bytes);
    const err = await assertRejects(() => extractArchive(`${target}/${name}`, `${target}/out`, quiet), InputError);
    assert(err.message.includes(JSON.stringify(entry)), `error should name ${entry}: ${err.message}`);
    assert(extra.test(err.message), err.message);
    assertEquals(tree(dir), ["target/", `target/${name}`]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("a zip entry ../evil.txt is rejected by name and nothing is written", async () => {
  const zip = createZip([{ name: "ok.txt", data: "fine" }, { name: "../evil.txt", data: "pwned" }]);
  await expectRejected(zip, "bad.zip", "../evil.txt", /escapes/);
});

Deno.test("a zip entry with an absolute path is rejected", async () => {
  const zip = createZip([{ name: "/tmp/archive_test_evil.txt", data: "pwned" }]);
  await expectRejected(zip, "bad.zip", "/tmp/archive_test_evil.txt", /absolute/);
  assert(!fs.existsSync("/tmp/archive_test_evil.txt"));
});

Deno.test("a tar entry ../evil.txt is rejected by name and nothing is written", async () => {
  // The good entry comes first, so it is written to the temporary folder and must be cleaned up.
  const tar = createTar([{ name: "ok.txt", data: "fine" }, { name: "../evil.txt", data: "pwned" }]);
  await expectRejected(tar, "bad.tar", "../evil.txt", /escapes/);
  await expectRejected(gzipSync(tar), "bad.tar.gz", "../evil.txt", /escapes/);
});

Deno.test("a tar entry with an absolute path is rejected and the path is not written", async () => {
  const dir = tempDir();
  try {
    const victim = `${dir}/victim.txt`;
    const tar = createTar([{ name: "ok.txt", data: "fine" }, { name: victim, data: "pwned" }]);
    await expectRejected(tar, "abs.tar", victim, /absolute/);
    assert(!fs.existsSync(victim));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("symlinks pointing outside the target are rejected in zip and tar", async () => {
  const cases: [string, ArchiveEntry[]][] = [
    ["up", [{ name: "up", type: "symlink", target: "../../outside" }]],
    ["abs", [{ name: "abs", type: "symlink", target: "/etc/passwd" }]],
    // Each target looks local on its own, but b resolves to the parent of the target folder.
    ["b", [{ name: "a", type: "symlink", target: "." }, { name: "b", type: "symlink", target: "a/.." }]],
  ];
  for (const [entry, entries] of cases) {
    await expectRejected(createZip(entries), "link.zip", entry);
    await expectRejected(createTar(entries), "link.tar", entry);
  }
});

Deno.test("a zip whose data fails its CRC-32 is rejected and leaves nothing behind", async () => {
  const zip = createZip([{ name: "data.txt", data: "abcdefgh", deflate: false }]);
  const at = Buffer.from(zip).indexOf("abcdefgh");
  zip[at] ^= 0xff;
  await expectRejected(zip, "crc.zip", "data.txt", /CRC-32 mismatch/);
});

Deno.test("extracting into an existing folder is refused", async () => {
  const dir = tempDir();
  try {
    Deno.writeFileSync(`${dir}/a.zip`, createZip(SAMPLE));
    fs.mkdirSync(`${dir}/out`);
    await assertRejects(() => extractArchive(`${dir}/a.zip`, `${dir}/out`, quiet), InputError, "already exists");
    assertEquals(tree(`${dir}/out`), []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a file that is no archive is reported as such", async () => {
  const dir = tempDir();
  try {
    Deno.writeTextFileSync(`${dir}/a.zip`, "just text");
    assertEquals(await archiveKind(`${dir}/a.zip`), undefined);
    await assertRejects(() => extractArchive(`${dir}/a.zip`, `${dir}/out`, quiet), InputError, "not a zip");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
