/**
 * Fuzzing the DiskDescriptor.xml parser (src/ploop/descriptor.ts): random text, random
 * XML-shaped documents built from the descriptor's own vocabulary (plus names that tend to
 * break object-based parsers), mutated valid descriptors, and hostile XML (entity
 * expansion, deep nesting). parseDescriptor and chainFor accept with a consistent result
 * or refuse with a one-line PloopFormatError naming the file; never anything else, never
 * slowly.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PloopFormatError } from "../../src/errors.js";
import { chainFor, isGuid, parseDescriptor, renderDescriptor, type DiskDescriptor } from "../../src/ploop/descriptor.js";
import { NONE_GUID } from "../../src/ploop/format.js";
import { attempt, runs } from "./oracle.js";

const PATH = "/fuzz/ct/root.hdd/DiskDescriptor.xml";

const guidArb = fc.uuid().map((u) => `{${u}}`);
const NAMES = [
  "Parallels_disk_image",
  "Disk_Parameters",
  "Disk_size",
  "Cylinders",
  "Heads",
  "Sectors",
  "Padding",
  "StorageData",
  "Storage",
  "Start",
  "End",
  "Blocksize",
  "Image",
  "GUID",
  "Type",
  "File",
  "Snapshots",
  "TopGUID",
  "Shot",
  "ParentGUID",
  "Temporary",
  "__proto__",
  "constructor",
  "prototype",
  "toString",
  "hasOwnProperty",
  "valueOf",
  "length",
  "#text",
];
const textArb = fc.oneof(
  guidArb,
  fc.constantFrom(
    NONE_GUID,
    "{5fbaabe3-6958-40ff-92a7-860e329aab41}",
    "Compressed",
    "Plain",
    "root.hds",
    "2048",
    "0",
    "",
    " ",
    "-1",
    "1e3",
    "99999999999999999999",
  ),
  fc.nat().map(String),
  fc.string({ maxLength: 20 }),
  fc.constantFrom("&amp;", "&lt;x&gt;", "&#0;", "&#x10FFFF;", "&#xD800;", "&unknown;", "a\nb", "\u0000", "]]>", "<![CDATA[x]]>", "<!-- c -->"),
);

/** A random element tree over the descriptor vocabulary, rendered as XML text. */
const xmlTree: fc.Arbitrary<string> = fc.letrec((tie) => ({
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    textArb,
    fc
      .tuple(fc.constantFrom(...NAMES.filter((n) => n !== "#text")), fc.array(tie("node"), { maxLength: 5 }))
      .map(([name, children]) => `<${name}>${(children as string[]).join("")}</${name}>`),
  ),
})).node as fc.Arbitrary<string>;

const randomDocument = fc
  .tuple(fc.boolean(), xmlTree)
  .map(([decl, body]) => `${decl ? '<?xml version="1.0"?>\n' : ""}<Parallels_disk_image>${body}</Parallels_disk_image>`);

/** A valid descriptor of a chain of 1..5 images. */
const validDescriptor = fc
  .record({
    clusterSectors: fc.constantFrom(128, 2048),
    clusters: fc.integer({ min: 1, max: 100000 }),
    images: fc.uniqueArray(guidArb, { minLength: 1, maxLength: 5 }),
    temporary: fc.nat({ max: 4 }),
  })
  .map(({ clusterSectors, clusters, images, temporary }) =>
    renderDescriptor({
      sizeSectors: clusters * clusterSectors,
      clusterSectors,
      images: images.map((guid, k) => ({ guid, file: `root.hds${k === 0 ? "" : `.${k}`}`, temporary: k < images.length - 1 && k === temporary })),
    }),
  );

type Edit = { kind: number; at: number; len: number; text: string };
const editArb = fc.record({ kind: fc.nat({ max: 6 }), at: fc.nat(), len: fc.nat({ max: 80 }), text: fc.oneof(textArb, xmlTree) });

/** Text edits that keep most of the structure: delete, insert, duplicate or swap lines, swap GUIDs. */
function mutate(xml: string, edits: readonly Edit[]): string {
  let s = xml;
  for (const e of edits) {
    const lines = s.split("\n");
    const at = s.length === 0 ? 0 : e.at % s.length;
    const line = lines.length === 0 ? 0 : e.at % lines.length;
    switch (e.kind) {
      case 0:
        s = s.slice(0, at) + s.slice(at + 1 + e.len);
        break;
      case 1:
        s = s.slice(0, at) + e.text + s.slice(at);
        break;
      case 2:
        lines.splice(line, 0, lines[line] ?? "");
        s = lines.join("\n");
        break;
      case 3:
        lines.splice(line, 1);
        s = lines.join("\n");
        break;
      case 4: {
        const other = (line + 1 + e.len) % Math.max(1, lines.length);
        [lines[line], lines[other]] = [lines[other]!, lines[line]!];
        s = lines.join("\n");
        break;
      }
      case 5: {
        // make one GUID equal to another one of the document (loops, duplicates, self-parents)
        const guids = s.match(/\{[0-9a-f-]{36}\}/gi) ?? [];
        if (guids.length >= 2) s = s.replace(guids[e.at % guids.length]!, guids[(e.at + 1 + e.len) % guids.length]!);
        break;
      }
      default: {
        // replace an element's text
        const texts = [...s.matchAll(/>([^<>]+)</g)];
        const m = texts.length === 0 ? undefined : texts[e.at % texts.length];
        if (m !== undefined && m.index !== undefined) s = s.slice(0, m.index + 1) + e.text.replace(/[<>]/g, "") + s.slice(m.index + 1 + m[1]!.length);
        break;
      }
    }
  }
  return s;
}

function checkAccepted(dd: DiskDescriptor): void {
  expect(dd.images.length).toBeGreaterThan(0);
  expect(dd.images.length).toBe(dd.shots.length);
  expect(isGuid(dd.topGuid)).toBe(true);
  expect(dd.images.some((i) => i.guid === dd.topGuid)).toBe(true);
  for (const i of dd.images) {
    expect(i.guid).toBe(i.guid.toLowerCase());
    expect(typeof i.file).toBe("string");
    expect(i.file.length).toBeGreaterThan(0);
  }
  const chain = chainFor(dd);
  expect(chain.length).toBeGreaterThan(0);
  expect(chain.length).toBeLessThanOrEqual(dd.images.length);
  expect(chain[chain.length - 1]!.guid).toBe(dd.topGuid);
  expect(new Set(chain.map((c) => c.guid)).size).toBe(chain.length);
}

describe("DiskDescriptor.xml parser (fuzz)", () => {
  it("random text", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 300 }), (text) => {
        const r = attempt(() => parseDescriptor(text, PATH), PloopFormatError, PATH);
        if (r.ok) checkAccepted(r.value);
      }),
      { numRuns: runs(2000) },
    );
  });

  it("random documents over the descriptor's vocabulary", () => {
    fc.assert(
      fc.property(randomDocument, (xml) => {
        const r = attempt(() => parseDescriptor(xml, PATH), PloopFormatError, PATH);
        if (r.ok) checkAccepted(r.value);
      }),
      { numRuns: runs(2000) },
    );
  });

  it("mutated valid descriptors", () => {
    let accepted = 0;
    fc.assert(
      fc.property(validDescriptor, fc.array(editArb, { minLength: 1, maxLength: 3 }), (xml, edits) => {
        const r = attempt(() => parseDescriptor(mutate(xml, edits), PATH), PloopFormatError, PATH);
        if (r.ok) {
          accepted++;
          checkAccepted(r.value);
        }
      }),
      { numRuns: runs(3000) },
    );
    expect(accepted).toBeGreaterThan(0);
  });

  it("valid descriptors parse, and chainFor any GUID-ish string answers or refuses cleanly", () => {
    fc.assert(
      fc.property(
        validDescriptor,
        fc.oneof(guidArb, fc.string({ maxLength: 40 }), fc.constantFrom(NONE_GUID, "", "{}", "5FBAABE3-6958-40FF-92A7-860E329AAB41")),
        (xml, top) => {
          const dd = parseDescriptor(xml, PATH);
          checkAccepted(dd);
          for (const image of dd.images) expect(chainFor(dd, image.guid).at(-1)!.guid).toBe(image.guid);
          const r = attempt(() => chainFor(dd, top), PloopFormatError, PATH);
          if (r.ok) expect(r.value.length).toBeGreaterThan(0);
        },
      ),
      { numRuns: runs(1000) },
    );
  });

  it("hostile XML: entity expansion, deep nesting, huge text, many elements", () => {
    const valid = renderDescriptor({ sizeSectors: 2048 * 10, clusterSectors: 2048, images: [{ file: "root.hds" }] });
    const laughs =
      '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">' +
      '<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">' +
      '<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;"><!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">' +
      '<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">]>';
    const cases = [
      valid.replace('<?xml version="1.0"?>', laughs).replace("<File>root.hds</File>", "<File>&lol6;</File>"),
      valid
        .replace('<?xml version="1.0"?>', '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]>')
        .replace("<File>root.hds</File>", "<File>&ext;</File>"),
      `<Parallels_disk_image>${"<a>".repeat(20000)}${"</a>".repeat(20000)}</Parallels_disk_image>`,
      valid.replace("<File>root.hds</File>", `<File>${"x".repeat(1_000_000)}</File>`),
      valid.replace("<Snapshots>", `<Snapshots>${"<Shot><GUID>{00000000-0000-0000-0000-000000000001}</GUID></Shot>".repeat(20000)}`),
      valid.replace("<File>root.hds</File>", "<File>root&#x0;.hds</File>"),
    ];
    for (const xml of cases) {
      const r = attempt(() => parseDescriptor(xml, PATH), PloopFormatError, PATH);
      if (r.ok) {
        checkAccepted(r.value);
        // an accepted file name is never the product of entity expansion or external entities
        expect(r.value.images[0]!.file).not.toMatch(/lollol|root:/);
      }
    }
  });
});
