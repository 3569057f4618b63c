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
import { assertRejectsError } from "./asserts.ts";

const quiet = { progress: { quiet: true } };

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
    const err = await assertRejectsError(() => extractArchive(`${target}/${name}`, `${target}/out`, quiet), InputError);
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
    await assertRejectsError(() => extractArchive(`${dir}/a.zip`, `${dir}/out`, quiet), InputError, "already exists");
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
    await assertRejectsError(() => extractArchive(`${dir}/a.zip`, `${dir}/out`, quiet), InputError, "not a zip");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---- The cases below check what the libraries (yauzl, tar-stream) now do for
// this module: each archive is a writer's output patched into the hostile or
// unusual shape, so the test needs no external tool.

/** Offset of the `n`th central directory header of a zip written by createZip. */
function centralHeader(zip: Uint8Array, n = 0): number {
  let at = -1;
  for (let i = 0; i <= n; i++) at = Buffer.from(zip).indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]), at + 1);
  return at;
}

/** Sets a tar header's type flag (and optionally its magic) and rewrites its checksum. */
function retype(tar: Uint8Array, headerAt: number, type: string, magic?: string): Uint8Array {
  const out = new Uint8Array(tar);
  const h = Buffer.from(out.buffer, out.byteOffset + headerAt, 512);
  h.write(type, 156, "latin1");
  if (magic !== undefined) h.fill(0, 257, 265).write(magic, 257, "latin1");
  h.write("        ", 148, "latin1");
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
  return out;
}

Deno.test("a zip entry that inflates past its declared size (a bomb) is stopped and leaves nothing behind", async () => {
  // Small entries are inflated in memory, large ones stream through yauzl: both paths stop at the declared size.
  const cases: [number, number, RegExp][] = [
    [1 << 20, 1000, /declared size of 1000/],
    [12 << 20, 9 << 20, /too many bytes/],
  ];
  for (const [size, declared, why] of cases) {
    const zip = createZip([{ name: "bomb.bin", data: new Uint8Array(size) }]);
    const dv = new DataView(zip.buffer);
    dv.setUint32(22, declared, true); // local header: uncompressed size
    dv.setUint32(centralHeader(zip) + 24, declared, true); // central directory: uncompressed size
    await expectRejected(zip, "bomb.zip", "bomb.bin", why);
  }
});

Deno.test("a zip entry over 8 MiB streams through yauzl and is CRC-checked", async () => {
  const big = new Uint8Array(9 << 20).map((_, i) => (i * 2654435761) >>> 24);
  const zip = createZip([{ name: "big.bin", data: big }]);
  const dir = tempDir();
  try {
    Deno.writeFileSync(`${dir}/a.zip`, zip);
    const r = await extractArchive(`${dir}/a.zip`, `${dir}/out`, quiet);
    assertEquals(r.bytes, big.length);
    assert(Buffer.from(Deno.readFileSync(`${dir}/out/big.bin`)).equals(Buffer.from(big)));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  // The same entry with one byte of its CRC-32 changed.
  new DataView(zip.buffer).setUint32(centralHeader(zip) + 16, crc32(big) ^ 1, true);
  await expectRejected(zip, "crc.zip", "big.bin", /CRC-32 mismatch/);
});

Deno.test("zip entries that are encrypted or use another compression method are refused by name", async () => {
  const enc = createZip([{ name: "secret.txt", data: "x" }]);
  new DataView(enc.buffer).setUint16(6, 1, true); // general purpose flag bit 0: encrypted
  new DataView(enc.buffer).setUint16(centralHeader(enc) + 8, 1, true);
  await expectRejected(enc, "enc.zip", "secret.txt", /encrypted/);
  const bz = createZip([{ name: "b.bin", data: "hello hello hello" }]);
  new DataView(bz.buffer).setUint16(8, 12, true); // method 12 is bzip2
  new DataView(bz.buffer).setUint16(centralHeader(bz) + 10, 12, true);
  await expectRejected(bz, "bz.zip", "b.bin", /compression method 12/);
});

/** Extracts `bytes` expecting an InputError matching `re`, and checks nothing is left but the archive. */
async function expectCorrupt(bytes: Uint8Array, name: string, re: RegExp): Promise<void> {
  const dir = tempDir();
  try {
    Deno.writeFileSync(`${dir}/${name}`, bytes);
    const err = await assertRejectsError(() => extractArchive(`${dir}/${name}`, `${dir}/out`, quiet), InputError);
    assert(re.test(err.message), err.message);
    assertEquals(tree(dir), [name]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("truncated tars and a tar with a bad header checksum are rejected and leave nothing behind", async () => {
  const tar = createTar([{ name: "a.bin", data: new Uint8Array(100_000).map((_, i) => i * 7) }]);
  const gz = gzipSync(tar);
  await expectCorrupt(gz.subarray(0, gz.length >> 1), "cut.tar.gz", /corrupt tar: unexpected end of file/);
  await expectCorrupt(tar.subarray(0, 50_000), "cut.tar", /corrupt tar/);
  const two = createTar([{ name: "ok.txt", data: "fine" }, { name: "b.txt", data: "b" }]);
  two[1024] ^= 0x01; // the second header's name
  await expectCorrupt(two, "sum.tar", /corrupt tar: Invalid tar header/);
});

Deno.test("tar hard links copy an earlier file; links to a later, missing or outside file are refused", async () => {
  // createTar writes symlinks; typeflag '1' turns its second entry into a hard link.
  const good = retype(
    createTar([{ name: "a.txt", data: "A" }, { name: "b.txt", type: "symlink", target: "a.txt" }]),
    1024,
    "1",
  );
  const dir = tempDir();
  try {
    Deno.writeFileSync(`${dir}/h.tar`, good);
    const r = await extractArchive(`${dir}/h.tar`, `${dir}/out`, quiet);
    assertEquals([r.files, r.links], [2, 0]);
    assertEquals(Deno.readTextFileSync(`${dir}/out/b.txt`), "A");
    assert(!Deno.lstatSync(`${dir}/out/b.txt`).isSymlink);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  const missing = retype(createTar([{ name: "b.txt", type: "symlink", target: "a.txt" }]), 0, "1");
  await expectRejected(missing, "h.tar", "b.txt", /not an earlier file/);
  const outside = retype(createTar([{ name: "b.txt", type: "symlink", target: "../../etc/passwd" }]), 0, "1");
  await expectRejected(outside, "h.tar", "../../etc/passwd", /escapes/);
});

Deno.test("a GNU long name (type L) and a pre-POSIX tar without magic are read; sparse members are refused", async () => {
  const long = `data/${"y".repeat(150)}.txt`;
  // A GNU long-name record is a header of type L whose data is the next entry's name.
  const gnu = new Uint8Array([
    ...retype(createTar([{ name: "././@LongLink", data: long + "\0" }]).subarray(0, 1024), 0, "L", "ustar  \0"),
    ...createTar([{ name: long.slice(0, 100), data: "gnu" }]),
  ]);
  const v7 = retype(createTar([{ name: "old.txt", data: "v7" }]), 0, "0", "");
  const dir = tempDir();
  try {
    Deno.writeFileSync(`${dir}/gnu.tar`, gnu);
    await extractArchive(`${dir}/gnu.tar`, `${dir}/gnu`, quiet);
    assertEquals(Deno.readTextFileSync(`${dir}/gnu/${long}`), "gnu");
    Deno.writeFileSync(`${dir}/v7.tar`, v7);
    assertEquals(await archiveKind(`${dir}/v7.tar`), "tar");
    await extractArchive(`${dir}/v7.tar`, `${dir}/v7`, quiet);
    assertEquals(Deno.readTextFileSync(`${dir}/v7/old.txt`), "v7");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  const sparse = retype(createTar([{ name: "s.bin", data: "x" }]), 0, "S");
  await expectRejected(sparse, "sparse.tar", "s.bin", /sparse/);
});
