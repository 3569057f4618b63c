/**
 * Image size from the header bytes alone (JPEG SOFn, PNG IHDR): readers learn
 * an image's size without decoding it, as the tutorial's records need it for
 * every box check.
 *
 * @module
 */

/**
 * Width and height from a JPEG (SOFn marker) or PNG (IHDR) header, or null
 * when the bytes are neither or the header is damaged.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const png = new Uint8Array(24);
 * png.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]);
 * new DataView(png.buffer).setUint32(16, 640);
 * new DataView(png.buffer).setUint32(20, 480);
 * assertEquals(imageSize(png), { width: 640, height: 480 });
 * ```
 */
export function imageSize(b: Uint8Array): { width: number; height: number } | null {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (b.length >= 24 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) {
    const width = dv.getUint32(16), height = dv.getUint32(20);
    return width > 0 && height > 0 ? { width, height } : null;
  }
  if (b.length < 4 || b[0] !== 0xff || b[1] !== 0xd8) return null;
  let p = 2;
  while (p + 4 <= b.length) {
    if (b[p] !== 0xff) return null;
    const m = b[p + 1];
    if (m === 0xff) {
      p++;
      continue;
    }
    if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) {
      p += 2;
      continue;
    }
    if (m === 0xd9 || m === 0xda) return null;
    const len = dv.getUint16(p + 2);
    if (len < 2) return null;
    const sof = m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;
    if (sof) {
      if (p + 9 > b.length) return null;
      const height = dv.getUint16(p + 5), width = dv.getUint16(p + 7);
      return width > 0 && height > 0 ? { width, height } : null;
    }
    p += 2 + len;
  }
  return null;
}
