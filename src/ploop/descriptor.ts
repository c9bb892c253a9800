/**
 * DiskDescriptor.xml: parse, build chains, render. Pure (strings in, strings out); the
 * I/O layer (disk.ts, writer.ts) reads/writes the file and resolves relative File paths
 * against the descriptor's directory.
 *
 * Reference: docs/ploop.md section 2. The parser is as strict as ploop itself where a
 * mistake would make us read the wrong images (exactly one Storage, Blocksize, GUIDs,
 * #images == #shots), and as lenient where ploop is (root element name, Disk_Parameters
 * content, unknown elements).
 */
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { errorLine, PloopFormatError } from "../errors.js";
import { NONE_GUID, SECTOR_BYTES, TOP_GUID, computeGeometry, isValidClusterSectors } from "./format.js";

export type ImageType = "Compressed" | "Plain";

export interface DescriptorImage {
  /** Lower-case braced GUID. */
  guid: string;
  /** As written in the descriptor (relative to its directory, or absolute). */
  file: string;
  type: ImageType;
}

export interface DescriptorShot {
  guid: string;
  parentGuid: string;
  temporary: boolean;
}

/**
 * "raw" when any <Image> says Plain: ploop then treats the whole disk as raw mode (the
 * base is a raw file, every delta above it is still a ploop1 image) and writes "Plain"
 * for every image, deltas included (measured with 1.15: `snapshot` on a raw disk).
 */
export type DiskMode = "expanded" | "raw";

export interface DiskDescriptor {
  /** The path given to parseDescriptor, for error messages. */
  descriptorPath: string;
  mode: DiskMode;
  /** Disk_Parameters/Disk_size (authoritative only for raw images). */
  diskSizeSectors?: number;
  blocksizeSectors: number;
  images: DescriptorImage[];
  shots: DescriptorShot[];
  topGuid: string;
}

export interface ChainImage {
  guid: string;
  file: string;
  /** How to open the file: Plain only for the base of a raw-mode disk. */
  type: ImageType;
}

/** The image chain, base first, ending with the chosen top. */
export type Chain = ChainImage[];

const GUID_RE = /^\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}$/i;
/** ploop accepts these as "temporary" markers (the last two are internal merge states of VZ8+). */
const TEMPORARY_TAGS = ["Temporary", "TemporaryZero", "TemporaryZeroSwap"];
/** ploop refuses a 128th image; the kernel limit is 128. */
const MAX_CHAIN = 128;

export function isGuid(text: string): boolean {
  return GUID_RE.test(text);
}

/**
 * Normalise a GUID given by a user or another tool: braces optional, any case.
 * Returns null if it is not a GUID.
 */
export function normaliseGuid(text: string): string | null {
  const t = text.trim();
  const braced = t.startsWith("{") ? t : `{${t}}`;
  return GUID_RE.test(braced) ? braced.toLowerCase() : null;
}

type XmlNode = { [key: string]: unknown };

function isNode(v: unknown): v is XmlNode {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const parser = new XMLParser({
  ignoreAttributes: true,
  parseTagValue: false, // keep "0012" and GUIDs as written
  trimValues: true,
  ignoreDeclaration: true,
  ignorePiTags: true,
  processEntities: true,
  htmlEntities: false,
  isArray: (name) => name === "Storage" || name === "Image" || name === "Shot",
});

/** One line, whatever the validator produced. */
function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

/** Text from the file, quoted for a one-line message: escaped (JSON) and cut at 80 characters. */
function quoted(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text).replace(/[\u2028\u2029]/g, " ");
}

function formatError(path: string, what: string): PloopFormatError {
  return new PloopFormatError(`${path}: ${what}`.replace(/[\r\n\u2028\u2029]+/g, " "));
}

/**
 * Parse and validate a DiskDescriptor.xml. GUIDs are normalised to lower case (ploop
 * compares them case-insensitively).
 */
export function parseDescriptor(xml: string, descriptorPath: string): DiskDescriptor {
  const fail = (what: string): never => {
    throw formatError(descriptorPath, what);
  };
  const valid = XMLValidator.validate(xml);
  if (valid !== true) {
    const where = valid.err.line === undefined ? "" : ` (line ${valid.err.line}${valid.err.col === undefined ? "" : `, column ${valid.err.col}`})`;
    fail(`malformed XML: ${oneLine(valid.err.msg)}${where}`);
  }
  let doc: unknown;
  try {
    doc = parser.parse(xml);
  } catch (error) {
    return fail(`malformed XML: ${oneLine(errorLine(error))}`);
  }
  if (!isNode(doc)) return fail("malformed XML: no root element");
  const roots = Object.keys(doc).filter((k) => !k.startsWith("#") && !k.startsWith("?"));
  if (roots.length !== 1) fail(`malformed XML: expected one root element, found ${roots.length}`);
  const root = doc[roots[0]!];
  if (!isNode(root)) return fail(`element <${roots[0]}> has no content`);

  /** A child element that may appear at most once; "" for an empty element. */
  const child = (node: XmlNode, name: string, where: string): unknown => {
    const v = node[name];
    if (Array.isArray(v)) fail(`<${name}> appears more than once in <${where}>`);
    return v;
  };
  const requireNode = (node: XmlNode, name: string, where: string): XmlNode => {
    const v = child(node, name, where);
    if (v === undefined) fail(`<${where}> has no <${name}>`);
    // An empty element (<Disk_Parameters/>) parses as "": treat as an empty node.
    if (v === "") return {};
    if (!isNode(v)) return fail(`<${name}> in <${where}> is not an element with children`);
    return v;
  };
  const text = (node: XmlNode, name: string, where: string): string | undefined => {
    const v = child(node, name, where);
    if (v === undefined) return undefined;
    if (typeof v !== "string") return fail(`<${name}> in <${where}> must hold text`);
    return v;
  };
  const integer = (node: XmlNode, name: string, where: string): number | undefined => {
    const t = text(node, name, where);
    if (t === undefined) return undefined;
    if (!/^\d+$/.test(t) || !Number.isSafeInteger(Number(t))) fail(`<${name}> in <${where}> is ${quoted(t)}, not a non-negative integer`);
    return Number(t);
  };
  const guid = (node: XmlNode, name: string, where: string): string => {
    const t = text(node, name, where);
    if (t === undefined || t === "") return fail(`<${where}> has no <${name}>`);
    if (!GUID_RE.test(t)) fail(`<${where}/${name}> ${quoted(t)} is not a GUID like {xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`);
    return t.toLowerCase();
  };

  const params = requireNode(root, "Disk_Parameters", roots[0]!);
  const diskSizeSectors = integer(params, "Disk_size", "Disk_Parameters");

  const storageData = requireNode(root, "StorageData", roots[0]!);
  const storages = storageData.Storage;
  const storageList = Array.isArray(storages) ? storages : [];
  if (storageList.length !== 1) fail(`expected exactly one <Storage> in <StorageData>, found ${storageList.length} (split disks are not supported)`);
  const storage = storageList[0];
  if (!isNode(storage)) return fail("<Storage> is empty");
  const blocksizeSectors = integer(storage, "Blocksize", "Storage");
  if (blocksizeSectors === undefined) return fail("<Storage> has no <Blocksize>");
  if (!isValidClusterSectors(blocksizeSectors)) fail(`<Blocksize> ${blocksizeSectors} is not a valid cluster size (power of two, 64..131072 sectors)`);

  const imageNodes = Array.isArray(storage.Image) ? storage.Image : [];
  if (imageNodes.length === 0) fail("<Storage> has no <Image>");
  const images: DescriptorImage[] = [];
  for (const [k, node] of imageNodes.entries()) {
    if (!isNode(node)) return fail(`<Image> #${k + 1} is empty`);
    const g = guid(node, "GUID", "Image");
    const file = text(node, "File", "Image");
    if (file === undefined || file === "") return fail(`<Image> ${g} has no <File>`);
    if (file.includes("\0")) fail(`<Image> ${g} has an invalid <File>`);
    if (Buffer.byteLength(file) > 4096) fail(`<Image> ${g} has a <File> longer than 4096 bytes (PATH_MAX)`);
    // docs/ploop.md 2.2: "Plain" is raw mode; anything else (normally "Compressed") is ploop1.
    const type: ImageType = text(node, "Type", "Image") === "Plain" ? "Plain" : "Compressed";
    if (images.some((i) => i.guid === g)) fail(`image GUID ${g} is listed twice`);
    images.push({ guid: g, file, type });
  }

  const snapshots = requireNode(root, "Snapshots", roots[0]!);
  const shotNodes = Array.isArray(snapshots.Shot) ? snapshots.Shot : [];
  const shots: DescriptorShot[] = [];
  if (shotNodes.length === 0 && images.length === 1) {
    // Old descriptors without <Shot> are accepted for a single image (docs/ploop.md 2.2).
    shots.push({ guid: images[0]!.guid, parentGuid: NONE_GUID, temporary: false });
  } else {
    if (shotNodes.length !== images.length) fail(`${images.length} <Image> but ${shotNodes.length} <Shot> elements`);
    for (const [k, node] of shotNodes.entries()) {
      if (!isNode(node)) return fail(`<Shot> #${k + 1} is empty`);
      const g = guid(node, "GUID", "Shot");
      const parentGuid = guid(node, "ParentGUID", "Shot");
      if (!images.some((i) => i.guid === g)) fail(`snapshot ${g} has no <Image>`);
      if (shots.some((s) => s.guid === g)) fail(`snapshot ${g} is listed twice`);
      if (parentGuid === g) fail(`snapshot ${g} is its own parent`);
      shots.push({ guid: g, parentGuid, temporary: TEMPORARY_TAGS.some((t) => node[t] !== undefined) });
    }
  }

  let topGuid: string;
  const topText = text(snapshots, "TopGUID", "Snapshots");
  if (topText !== undefined && topText !== "") {
    topGuid = guid(snapshots, "TopGUID", "Snapshots");
    if (!images.some((i) => i.guid === topGuid)) fail(`<TopGUID> ${topGuid} has no <Image>`);
  } else {
    // No TopGUID: the only image nobody names as parent is the top.
    const leaves = shots.filter((s) => !shots.some((o) => o.parentGuid === s.guid));
    if (leaves.length !== 1) return fail(`no <TopGUID> and ${leaves.length} candidate top images`);
    topGuid = leaves[0]!.guid;
  }
  if (shots.find((s) => s.guid === topGuid)?.temporary) fail(`top image ${topGuid} is marked temporary`);

  const mode: DiskMode = images.some((i) => i.type === "Plain") ? "raw" : "expanded";
  const dd: DiskDescriptor = { descriptorPath, mode, blocksizeSectors, images, shots, topGuid };
  if (diskSizeSectors !== undefined) dd.diskSizeSectors = diskSizeSectors;
  // Like ploop: the base must be reachable from the top.
  chainFor(dd);
  return dd;
}

/**
 * The images that make up the disk as of `topGuid` (default: the live top), base first.
 * Follows ParentGUID links, never the order of <Image> elements (docs/ploop.md 2.3).
 */
export function chainFor(dd: DiskDescriptor, topGuid: string = dd.topGuid): Chain {
  const fail = (what: string): never => {
    throw formatError(dd.descriptorPath, what);
  };
  const start = normaliseGuid(topGuid);
  if (start === null) return fail(`${quoted(topGuid)} is not a GUID`);
  // the all-zero GUID means "no parent": it is never an image, and would give an empty chain
  if (start === NONE_GUID) return fail(`snapshot ${start} is not in the descriptor`);
  const chain: Chain = [];
  const seen = new Set<string>();
  let current = start;
  while (current !== NONE_GUID) {
    if (seen.has(current)) fail(`snapshot chain from ${start} loops at ${current}`);
    seen.add(current);
    const image = dd.images.find((i) => i.guid === current);
    if (image === undefined) {
      return fail(
        chain.length === 0
          ? `snapshot ${current} is not in the descriptor`
          : `snapshot ${chain[chain.length - 1]!.guid} has parent ${current}, which has no <Image> (base image not found)`,
      );
    }
    const shot = dd.shots.find((s) => s.guid === current);
    if (shot === undefined) return fail(`image ${current} has no <Shot>`);
    chain.push({ guid: image.guid, file: image.file, type: "Compressed" });
    if (chain.length > MAX_CHAIN) fail(`snapshot chain from ${start} is longer than ${MAX_CHAIN} images`);
    current = shot.parentGuid;
  }
  chain.reverse();
  // Raw mode (like ploop): only the base is a raw file; deltas are always ploop1 images.
  if (dd.mode === "raw") chain[0]!.type = "Plain";
  return chain;
}

/** One image of a chain as `ploop snapshot-list -H -o uuid,parent_uuid,fname -u GUID` prints it. */
export interface SnapshotListEntry {
  /** Lower-case braced GUID. */
  guid: string;
  parentGuid: string;
  /** Absolute path, spelled as ploop spells it (below). */
  file: string;
}

/**
 * What `ploop snapshot-list -H -o uuid,parent_uuid,fname -u GUID DD` prints, from the
 * parsed descriptor: GUID's image first, the base last, each with its parent. ploop reads
 * the same file the same way (tools/ploop-snapshot.c: follow ParentGUID from GUID to the
 * all-zero GUID; lib/xml.c: a relative <File> is appended to the directory of the
 * descriptor's realpath, an absolute one is kept as written), so `realDir` is
 * dirname(realpath(DD)). test/live/snapshot-list.test.ts compares both on real disks.
 */
export function snapshotListFor(dd: DiskDescriptor, guid: string, realDir: string): SnapshotListEntry[] {
  const chain = chainFor(dd, guid).reverse(); // top first
  const base = realDir.endsWith("/") ? realDir : `${realDir}/`;
  return chain.map((image, k) => ({
    guid: image.guid,
    parentGuid: chain[k + 1]?.guid ?? NONE_GUID,
    file: image.file.startsWith("/") ? image.file : `${base}${image.file}`,
  }));
}

export interface RenderImage {
  /** Defaults to TOP_GUID for the last (top) image; required for the others. */
  guid?: string;
  file: string;
  type?: ImageType;
  temporary?: boolean;
}

export interface RenderDescriptorOptions {
  sizeSectors: number;
  clusterSectors: number;
  /** Base first; each image's parent is the previous one, the base's is NONE_GUID. */
  images: readonly RenderImage[];
}

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/**
 * A descriptor in ploop 1.15's own layout (docs/ploop.md 2.1; byte-identical to `ploop init` for
 * one image). A single image gets TOP_GUID with parent NONE_GUID.
 */
export function renderDescriptor(options: RenderDescriptorOptions): string {
  const { sizeSectors, clusterSectors, images } = options;
  if (!isValidClusterSectors(clusterSectors)) throw new RangeError(`invalid cluster size ${clusterSectors} sectors`);
  if (!Number.isSafeInteger(sizeSectors) || sizeSectors <= 0) throw new RangeError(`invalid disk size ${sizeSectors} sectors`);
  if (images.length === 0) throw new RangeError("a descriptor needs at least one image");
  const guids = images.map((image, k) => {
    const g = image.guid ?? (k === images.length - 1 ? TOP_GUID : undefined);
    const n = g === undefined ? null : normaliseGuid(g);
    if (n === null) throw new RangeError(`image ${image.file}: missing or invalid GUID`);
    return n;
  });
  if (new Set(guids).size !== guids.length) throw new RangeError("image GUIDs must be unique");
  const geometry = computeGeometry(sizeSectors);
  // <Sectors> is recomputed from the size, not the track size (docs/ploop.md 1.6: 100M -> 400/16/32).
  const sectors = Math.floor(sizeSectors / (geometry.cylinders * geometry.heads));
  const lines = [
    `<?xml version="1.0"?>`,
    `<Parallels_disk_image>`,
    `  <Disk_Parameters>`,
    `    <Disk_size>${sizeSectors}</Disk_size>`,
    `    <Cylinders>${geometry.cylinders}</Cylinders>`,
    `    <Heads>${geometry.heads}</Heads>`,
    `    <Sectors>${sectors}</Sectors>`,
    `    <Padding>0</Padding>`,
    `  </Disk_Parameters>`,
    `  <StorageData>`,
    `    <Storage>`,
    `      <Start>0</Start>`,
    `      <End>${sizeSectors}</End>`,
    `      <Blocksize>${clusterSectors}</Blocksize>`,
  ];
  images.forEach((image, k) => {
    lines.push(
      `      <Image>`,
      `        <GUID>${guids[k]}</GUID>`,
      `        <Type>${image.type ?? "Compressed"}</Type>`,
      `        <File>${escapeXml(image.file)}</File>`,
      `      </Image>`,
    );
  });
  lines.push(`    </Storage>`, `  </StorageData>`, `  <Snapshots>`, `    <TopGUID>${guids[guids.length - 1]}</TopGUID>`);
  images.forEach((image, k) => {
    lines.push(`    <Shot>`, `      <GUID>${guids[k]}</GUID>`, `      <ParentGUID>${k === 0 ? NONE_GUID : guids[k - 1]}</ParentGUID>`);
    if (image.temporary) lines.push(`      <Temporary/>`);
    lines.push(`    </Shot>`);
  });
  lines.push(`  </Snapshots>`, `</Parallels_disk_image>`, "");
  return lines.join("\n");
}

/** Convenience for callers that think in bytes. */
export function sectorsOf(bytes: number): number {
  if (bytes % SECTOR_BYTES !== 0) throw new RangeError(`${bytes} bytes is not a whole number of sectors`);
  return bytes / SECTOR_BYTES;
}
