/**
 * Pascal VOC reader: `ROOT/Annotations/*.xml` (optionally the ids listed in
 * `ROOT/ImageSets/Main/SPLIT.txt`) and `ROOT/JPEGImages/`, into
 * {@linkcode DetectionRecord}s, with a small strict XML parser (elements,
 * attributes, text, CDATA, the five entities and character references,
 * comments, processing instructions; DOCTYPE is refused).
 *
 * Coordinates follow the ModelZoo's create_voc_label exactly: each of
 * xmin/ymin/xmax/ymax is `int(float(text)) - 1` (VOC pixels are 1-based), and
 * these are the record's x1,y1,x2,y2. Image ids are the file stem when it is
 * all digits, else the running position (get_imageId_from_fileName).
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { DetectionRecord } from "./detection_record.ts";
import { InputError } from "./errors.ts";
import { type ClassMap, labelOf, vocClassMap } from "./class_maps.ts";
import { imageSize } from "./image_header.ts";
import { checkBox, newReport, type Policy, type PolicyReport, rejectItem } from "./input_policy.ts";

/** An XML element. Children are elements or text runs. */
export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: (XmlElement | string)[];
  /** 1-based line of the start tag. */
  line: number;
}

const NAME_START = /[A-Za-z_:\u00C0-\uFFFF]/;
const NAME_CHAR = /[-A-Za-z0-9_:.\u00B7\u00C0-\uFFFF]/;
const ENTITIES: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };
const MAX_DEPTH = 256;

/**
 * Parses an XML document strictly; any error is an {@linkcode InputError}
 * naming `file` and the line.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const root = parseXml('<a x="1"><b>A &amp; B</b><!-- c --><b/></a>', "t.xml");
 * assertEquals([root.name, root.attrs.x, xmlText(xmlChild(root, "b")!)], ["a", "1", "A & B"]);
 * ```
 */
export function parseXml(text: string, file: string): XmlElement {
  let p = 0;
  const n = text.length;
  // Line numbers are counted incrementally: positions only move forward while parsing.
  let lastPos = 0, lastLine = 1;
  const lineAt = (pos: number) => {
    if (pos < lastPos) (lastPos = 0, lastLine = 1);
    for (let i = lastPos; i < pos && i < n; i++) if (text.charCodeAt(i) === 10) lastLine++;
    lastPos = Math.min(pos, n);
    return lastLine;
  };
  const fail = (msg: string, pos = p): never => {
    throw new InputError(`malformed XML: ${msg}`, { file, where: `line ${lineAt(pos)}` });
  };
  const startsWith = (s: string) => text.startsWith(s, p);
  const skipWs = () => {
    while (p < n && (text[p] === " " || text[p] === "\t" || text[p] === "\n" || text[p] === "\r")) p++;
  };
  const name = (): string => {
    const s = p;
    if (p >= n || !NAME_START.test(text[p])) fail(`expected a name`);
    p++;
    while (p < n && NAME_CHAR.test(text[p])) p++;
    return text.slice(s, p);
  };
  const decode = (raw: string, at: number): string => {
    if (!raw.includes("&")) return raw;
    return raw.replace(/&([^;&\s]{0,12});?/g, (m, body: string) => {
      if (!m.endsWith(";")) fail(`unterminated entity reference "${m}"`, at);
      if (body.startsWith("#")) {
        const code = body[1] === "x" ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
        const valid = /^#(x[0-9A-Fa-f]+|[0-9]+)$/.test(body) && code > 0 && code <= 0x10ffff &&
          !(code >= 0xd800 && code <= 0xdfff);
        if (!valid) fail(`bad character reference "${m}"`, at);
        return String.fromCodePoint(code);
      }
      if (!(body in ENTITIES)) fail(`unknown entity "${m}"`, at);
      return ENTITIES[body];
    });
  };
  const misc = () => {
    // Comments, processing instructions and whitespace between top-level items.
    for (;;) {
      skipWs();
      if (startsWith("<!--")) comment();
      else if (startsWith("<?")) pi();
      else return;
    }
  };
  const comment = () => {
    const end = text.indexOf("-->", p + 4);
    if (end < 0) fail("unterminated comment");
    if (text.slice(p + 4, end).includes("--")) fail(`"--" inside a comment`);
    p = end + 3;
  };
  const pi = () => {
    const end = text.indexOf("?>", p + 2);
    if (end < 0) fail("unterminated processing instruction");
    p = end + 2;
  };
  const element = (depth: number): XmlElement => {
    if (depth > MAX_DEPTH) fail(`elements nested deeper than ${MAX_DEPTH}`);
    const start = p;
    p++; // <
    const el: XmlElement = { name: name(), attrs: {}, children: [], line: lineAt(start) };
    for (;;) {
      const before = p;
      skipWs();
      if (p >= n) fail(`unterminated start tag <${el.name}>`, start);
      if (startsWith("/>")) {
        p += 2;
        return el;
      }
      if (text[p] === ">") {
        p++;
        break;
      }
      if (p === before) fail(`expected whitespace, ">" or "/>" in <${el.name}>`);
      const an = name();
      skipWs();
      if (text[p] !== "=") fail(`attribute ${an} has no "="`);
      p++;
      skipWs();
      const q = text[p];
      if (q !== '"' && q !== "'") fail(`attribute ${an} value is not quoted`);
      const end = text.indexOf(q, p + 1);
      if (end < 0) fail(`unterminated value of attribute ${an}`);
      const raw = text.slice(p + 1, end);
      if (raw.includes("<")) fail(`"<" inside the value of attribute ${an}`);
      if (an in el.attrs) fail(`attribute ${an} repeated`);
      el.attrs[an] = decode(raw, p);
      p = end + 1;
    }
    // Content.
    for (;;) {
      if (p >= n) fail(`element <${el.name}> is not closed`, start);
      if (startsWith("</")) {
        p += 2;
        const close = name();
        skipWs();
        if (text[p] !== ">") fail(`bad end tag </${close}`);
        p++;
        if (close !== el.name) fail(`end tag </${close}> does not match <${el.name}> (line ${el.line})`);
        return el;
      }
      if (startsWith("<!--")) comment();
      else if (startsWith("<![CDATA[")) {
        const end = text.indexOf("]]>", p + 9);
        if (end < 0) fail("unterminated CDATA section");
        el.children.push(text.slice(p + 9, end));
        p = end + 3;
      } else if (startsWith("<?")) pi();
      else if (startsWith("<!")) fail("unexpected markup declaration");
      else if (text[p] === "<") el.children.push(element(depth + 1));
      else {
        const end = text.indexOf("<", p);
        const stop = end < 0 ? n : end;
        const raw = text.slice(p, stop);
        if (raw.includes("]]>")) fail(`"]]>" in text`);
        el.children.push(decode(raw, p));
        p = stop;
      }
    }
  };
  if (text.charCodeAt(0) === 0xfeff) p = 1;
  // XML 1.0 Char production: no C0 controls other than tab, newline and carriage return.
  // deno-lint-ignore no-control-regex
  const forbidden = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/;
  if (forbidden.test(text)) {
    const bad = text.search(forbidden);
    fail(`control character U+${text.charCodeAt(bad).toString(16).padStart(4, "0")} is not allowed`, bad);
  }
  misc();
  if (startsWith("<!DOCTYPE")) fail("DOCTYPE declarations are not supported");
  if (text[p] !== "<") fail(p >= n ? "no root element" : "text before the root element");
  const root = element(0);
  misc();
  if (p < n) fail("content after the root element");
  return root;
}

/** The first child element called `name`. */
export function xmlChild(el: XmlElement, name: string): XmlElement | undefined {
  return el.children.find((c): c is XmlElement => typeof c !== "string" && c.name === name);
}

/** Every child element called `name`. */
export function xmlChildren(el: XmlElement, name: string): XmlElement[] {
  return el.children.filter((c): c is XmlElement => typeof c !== "string" && c.name === name);
}

/** The concatenated text of an element's direct text children, trimmed. */
export function xmlText(el: XmlElement): string {
  return el.children.filter((c): c is string => typeof c === "string").join("").trim();
}

/** Options for {@linkcode readVoc}. */
export interface VocReadOptions {
  /** ImageSets/Main/SPLIT.txt to read ids from; default: every Annotations/*.xml, sorted. */
  split?: string;
  /** Folder holding the images; default ROOT/JPEGImages (or ROOT/Images, the ModelZoo layout, when only it exists). */
  images?: string;
  classes?: ClassMap;
  policy?: Policy;
  readImages?: boolean;
}

/**
 * Parses one VOC annotation file's text into a record (image not touched).
 * `fallbackId` is the image id when the stem is not all digits.
 */
export function parseVocXml(
  text: string,
  file: string,
  options: { classes?: ClassMap; policy?: Policy; report?: PolicyReport; imagesDir?: string; fallbackId?: number } = {},
): DetectionRecord {
  const classes = options.classes ?? vocClassMap();
  const policy = options.policy ?? "error";
  const report = options.report ?? newReport();
  const root = parseXml(text, file);
  const fail = (msg: string, el: XmlElement): never => {
    throw new InputError(msg, { file, where: `line ${el.line}` });
  };
  if (root.name !== "annotation") fail(`root element is <${root.name}>, expected <annotation>`, root);
  const req = (el: XmlElement, name: string): XmlElement =>
    xmlChild(el, name) ?? fail(`<${el.name}> has no <${name}>`, el);
  const fileEl = req(root, "filename");
  const fileName = xmlText(fileEl);
  if (fileName === "") fail("<filename> is empty", fileEl);
  const intOf = (el: XmlElement, name: string): number => {
    const c = req(el, name);
    const t = xmlText(c);
    const v = Number(t);
    if (t === "" || !Number.isFinite(v)) fail(`<${name}> is not a number: ${JSON.stringify(t)}`, c);
    return v;
  };
  const size = req(root, "size");
  const width = intOf(size, "width"), height = intOf(size, "height");
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    fail(`image size ${width}x${height} is not positive integers`, size);
  }
  const boxes: number[] = [], labels: number[] = [], difficult: number[] = [];
  for (const [k, obj] of xmlChildren(root, "object").entries()) {
    const where = `line ${obj.line}, object ${k}`;
    const nameEl = req(obj, "name");
    const cls = xmlText(nameEl);
    const label = labelOf(classes, cls);
    if (label < 0) {
      rejectItem(policy, report, "box", `class "${cls}" is not in the class map (${classes.source})`, file, where);
      continue;
    }
    const bnd = req(obj, "bndbox");
    // create_voc_label: int(float(text)) - 1.
    const c = ["xmin", "ymin", "xmax", "ymax"].map((t) => Math.trunc(intOf(bnd, t)) - 1);
    const box = checkBox([c[0], c[1], c[2], c[3]], width, height, policy, report, file, where);
    if (!box) continue;
    boxes.push(...box);
    labels.push(label);
    const d = xmlChild(obj, "difficult");
    difficult.push(d && xmlText(d) === "1" ? 1 : 0);
  }
  const stem = path.basename(fileName, path.extname(fileName));
  return {
    imgId: /^\d{1,15}$/.test(stem) ? Number(stem) : (options.fallbackId ?? 0),
    file: options.imagesDir ? path.join(options.imagesDir, fileName) : fileName,
    width,
    height,
    boxes: Float64Array.from(boxes), // [N, 4]
    labels: Int32Array.from(labels), // [N]
    iscrowd: new Uint8Array(labels.length), // [N]
    extra: { file_name: fileName, difficult },
  };
}

/**
 * Reads a VOC root. Missing images, unknown classes and bad boxes follow the
 * policy; the records keep the source order (split file, or sorted names).
 */
export function readVoc(
  root: string,
  options: VocReadOptions = {},
): { records: DetectionRecord[]; report: PolicyReport; classMap: ClassMap } {
  const policy = options.policy ?? "error";
  const classes = options.classes ?? vocClassMap();
  const report = newReport();
  const annDir = path.join(root, "Annotations");
  // VOC keeps images in JPEGImages/; the ModelZoo's own VOC layout uses Images/.
  const imagesDir = options.images ??
    (!fs.existsSync(path.join(root, "JPEGImages")) && fs.existsSync(path.join(root, "Images"))
      ? path.join(root, "Images")
      : path.join(root, "JPEGImages"));
  if (!fs.existsSync(annDir) || !fs.statSync(annDir).isDirectory()) {
    throw new InputError(`not a VOC root: no Annotations/ folder`, { file: root });
  }
  let xmls: string[];
  if (options.split) {
    const list = path.join(root, "ImageSets", "Main", `${options.split}.txt`);
    let text: string;
    try {
      text = fs.readFileSync(list, "utf8");
    } catch (e) {
      throw new InputError(`cannot read split list (${(e as Error).message})`, { file: list });
    }
    xmls = [];
    text.split(/\r?\n/).forEach((l, i) => {
      const id = l.trim().split(/\s+/)[0];
      if (!id) return;
      if (id.includes("/") || id.includes("\\") || id.startsWith(".")) {
        throw new InputError(`bad image id ${JSON.stringify(id)}`, { file: list, where: `line ${i + 1}` });
      }
      xmls.push(`${id}.xml`);
    });
  } else {
    xmls = fs.readdirSync(annDir).filter((f) => f.endsWith(".xml")).sort();
  }
  const records: DetectionRecord[] = [];
  xmls.forEach((x, i) => {
    const file = path.join(annDir, x);
    let text: string;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (e) {
      throw new InputError(`cannot read annotation (${(e as Error).message})`, { file });
    }
    const rec = parseVocXml(text, file, { classes, policy, report, imagesDir, fallbackId: i });
    if (!fs.existsSync(rec.file)) {
      rejectItem(policy, report, "image", `image file ${rec.file} is missing`, file, "filename");
      return;
    }
    if (options.readImages) {
      rec.image = Deno.readFileSync(rec.file);
      if (!imageSize(rec.image)) throw new InputError("image is not a readable JPEG or PNG", { file: rec.file });
    }
    records.push(rec);
  });
  return { records, report, classMap: classes };
}
