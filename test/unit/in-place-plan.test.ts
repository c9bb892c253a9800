/**
 * The pure parts of restore --in-place (src/restore/in-place.ts): which 4 KiB blocks of a
 * chunk are written, which parts of a hole are read (filefrag's extents), and when a run
 * starts, resumes or refuses.
 */
import { describe, expect, it } from "vitest";
import { allocatedParts, decideInPlaceStart, differingRanges, parseFilefrag } from "../../src/restore/in-place.js";

const FILEFRAG = `Filesystem type is: ef53
File size of y.raw is 1992294400 (486400 blocks of 4096 bytes)
 ext:     logical_offset:        physical_offset: length:   expected: flags:
   0:        0..     241:   66764800..  66765041:    242:            
   1:      242..     245:   66765045..  66765048:      4:   66765042:
   2:     7874..   20479:   66766848..  66779453:  12606:   66772674: last
y.raw: 3 extents found
`;

// filefrag -e -s of a file written by dd at blocks 0-9, 13-20 and 40-42 (e2fsprogs 1.47, ext4)
const SEQUENTIAL_SPARSE = `Filesystem type is: ef53
File size of sp.bin is 176128 (43 blocks of 4096 bytes)
 ext:     logical_offset:        physical_offset: length:   expected: flags:
   0:        0..       9:   23921344..  23921353:     10:            
   1:       13..      20:   23921357..  23921364:      8:            
   2:       40..      42:   23921384..  23921386:      3:             last,eof
sp.bin: 1 extent found
`;

// the same writes on XFS, then truncated to 1 MiB: preallocated (unwritten) extents, which
// read as zeros and count as blocks here, and "2 extents found" for five listed lines
const SEQUENTIAL_SPARSE_XFS = `Filesystem type is: 58465342
File size of sp.bin is 1048576 (256 blocks of 4096 bytes)
 ext:     logical_offset:        physical_offset: length:   expected: flags:
   0:        0..       9:         59..        68:     10:            
   1:       13..      20:         24..        31:      8:         72:
   2:       21..      31:         32..        42:     11:             unwritten
   3:       40..      42:         51..        53:      3:            
   4:       43..      47:         54..        58:      5:             last,unwritten
sp.bin: 2 extents found
`;

describe("restore --in-place planning", () => {
  it("differingRanges: whole file blocks that differ, adjacent ones merged, alignment by file position", () => {
    const want = Buffer.alloc(5 * 4096, 1);
    const now = Buffer.from(want);
    expect(differingRanges(now, want, 0)).toEqual([]);
    now[10] = 0;
    now[4096 + 5] = 0;
    now[4 * 4096] = 0;
    expect(differingRanges(now, want, 0)).toEqual([
      [0, 8192],
      [16384, 20480],
    ]);
    // a chunk starting 100 bytes into the file: its blocks end at 3996, 8092, ... of the buffer
    expect(differingRanges(now, want, 100)).toEqual([
      [0, 8092],
      [16284, 20380],
    ]);
  });

  it("parseFilefrag: byte ranges, merged; refuses output it does not understand", () => {
    expect(parseFilefrag(FILEFRAG)).toEqual([
      [0, 246 * 4096],
      [7874 * 4096, 20480 * 4096],
    ]);
    expect(parseFilefrag(FILEFRAG.replace("3 extents", "4 extents"))).toBeNull();
    // a listing cut short (no FIEMAP_EXTENT_LAST on its final line) is not trusted
    expect(parseFilefrag(FILEFRAG.replace(" last\n", "\n"))).toBeNull();
    // a file written sequentially with holes: ext4 puts each piece where the hole's length
    // on disk continues the previous one, and filefrag counts the three as one extent
    expect(parseFilefrag(SEQUENTIAL_SPARSE)).toEqual([
      [0, 10 * 4096],
      [13 * 4096, 21 * 4096],
      [40 * 4096, 43 * 4096],
    ]);
    expect(parseFilefrag(SEQUENTIAL_SPARSE_XFS)).toEqual([
      [0, 10 * 4096],
      [13 * 4096, 32 * 4096],
      [40 * 4096, 48 * 4096],
    ]);
    expect(parseFilefrag("Filesystem type is: ef53\nFile size of e is 0 (0 blocks of 4096 bytes)\ne: 0 extents found\n")).toEqual([]);
    expect(parseFilefrag("/dev/shm/x: FIBMAP/FIEMAP unsupported\n")).toBeNull();
  });

  it("allocatedParts: only what lies inside the extents; everything when they are unknown", () => {
    const extents: [number, number][] = [
      [0, 100],
      [200, 300],
      [500, 600],
    ];
    expect(allocatedParts(extents, 50, 500)).toEqual([
      [50, 100],
      [200, 300],
      [500, 550],
    ]);
    expect(allocatedParts(extents, 100, 100)).toEqual([]);
    expect(allocatedParts(extents, 700, 10)).toEqual([]);
    expect(allocatedParts(null, 100, 100)).toEqual([[100, 200]]);
  });

  it("decideInPlaceStart: start, resume, or one line of refusal", () => {
    const file = { kind: "file", links: 1 } as const;
    expect(decideInPlaceStart("/d/x.raw", file, null, true)).toBe("start");
    expect(decideInPlaceStart("/d/x.raw", null, file, true)).toBe("resume");
    expect(() => decideInPlaceStart("/d/x.raw", file, null, false)).toThrow(/already exists \(use --force/);
    expect(() => decideInPlaceStart("/d/x.raw", null, file, false)).toThrow(/interrupted restore --in-place .*\(add --force/);
    expect(() => decideInPlaceStart("/d/x.raw", file, file, true)).toThrow(/x\.raw\.ploopvault-partial exists beside/);
    expect(() => decideInPlaceStart("/d/x.raw", null, null, true)).toThrow(/does not exist/);
    expect(() => decideInPlaceStart("/d/x.raw", { kind: "directory", links: 2 }, null, true)).toThrow(/is a directory/);
    expect(() => decideInPlaceStart("/d/x.raw", { kind: "other", links: 1 }, null, true)).toThrow(/not a regular file/);
    expect(() => decideInPlaceStart("/d/x.raw", { kind: "file", links: 2 }, null, true)).toThrow(/2 hard links/);
    expect(() => decideInPlaceStart("/d/x.raw", null, { kind: "directory", links: 2 }, true)).toThrow(/ploopvault-partial is a directory/);
  });
});
