/**
 * Atomic file placement: write to a temporary file beside the target, then
 * rename, so a crash never leaves a half-written file under the real name.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";

/** A temporary name beside `file`, unique to this process and call. */
export function tempNameFor(file: string): string {
  const dir = path.dirname(file);
  const base = path.basename(file);
  return path.join(dir, `.${base}.${Deno.pid}.${Math.random().toString(36).slice(2, 8)}.tmp`);
}

/**
 * Writes `data` to `file` atomically, creating parent folders.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const dir = Deno.makeTempDirSync();
 * await writeFileAtomic(`${dir}/a.txt`, "hello");
 * assertEquals(Deno.readTextFileSync(`${dir}/a.txt`), "hello");
 * ```
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await fs.promises.mkdir(path.dirname(file), { recursive: true });
  const tmp = tempNameFor(file);
  try {
    await fs.promises.writeFile(tmp, data);
    await fs.promises.rename(tmp, file);
  } catch (e) {
    await fs.promises.rm(tmp, { force: true });
    throw e;
  }
}

/** Synchronous {@linkcode writeFileAtomic}. */
export function writeFileAtomicSync(file: string, data: string | Uint8Array): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = tempNameFor(file);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** Writes `value` as pretty JSON, atomically. */
export function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  return writeFileAtomic(file, JSON.stringify(value, null, 2) + "\n");
}
