/** Container discovery: vzlist (a fake one here) or a scan of the private root. */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listContainers, parseVzlist, resolveContainers } from "../../src/host/containers.js";
import { scratch, script } from "./fixtures.js";

let dir: string;
let cleanup: () => Promise<void>;
let priv: string;
let confDir: string;
let vzlist: string;

async function ploopCt(ct: string, options: { veConf?: boolean } = {}): Promise<void> {
  await mkdir(join(priv, ct, "root.hdd"), { recursive: true });
  await writeFile(join(priv, ct, "root.hdd", "DiskDescriptor.xml"), "<Parallels_disk_image/>\n");
  if (options.veConf) await writeFile(join(priv, ct, "ve.conf"), "DISKSPACE=1G\n");
}

beforeAll(async () => {
  ({ dir, cleanup } = await scratch("containers"));
  priv = join(dir, "vz", "private");
  confDir = join(dir, "etc", "vz", "conf");
  await mkdir(confDir, { recursive: true });
  await ploopCt("101", { veConf: true });
  await ploopCt("102");
  await writeFile(join(confDir, "102.conf"), "X=1\n");
  await mkdir(join(priv, "103", "root"), { recursive: true }); // simfs: no root.hdd
  await ploopCt("104");
  await ploopCt("105"); // on disk, unknown to vzlist
  await mkdir(join(dir, "other place", "200", "root.hdd"), { recursive: true });
  await writeFile(join(dir, "other place", "200", "root.hdd", "DiskDescriptor.xml"), "<x/>\n");
  // vzlist pads CTIDs to the right; private areas may live anywhere.
  vzlist = await script(
    dir,
    "vzlist",
    `[ "$*" = "-a -H -o ctid,private,status" ] || { echo "bad args: $*" >&2; exit 2; }
cat <<'OUT'
       101 ${priv}/101 running
       102 ${priv}/102 stopped
       103 ${priv}/103 running
       104 ${priv}/104 mounted
       200 ${dir}/other place/200 suspended
       300 - stopped
OUT`,
  );
});
afterAll(async () => {
  await cleanup();
});

describe("container discovery", () => {
  it("parses vzlist output", () => {
    expect(parseVzlist("       101 /vz/private/101 running\n  1000 /vz/private/1000 stopped\n\n")).toEqual([
      { ct: "101", privateDir: "/vz/private/101", status: "running" },
      { ct: "1000", privateDir: "/vz/private/1000", status: "stopped" },
    ]);
    expect(() => parseVzlist("garbage\n")).toThrow(/vzlist: unexpected output line "garbage"/);
  });

  it("lists ploop containers from vzlist with status and config", async () => {
    const list = await listContainers({ vzlistBin: vzlist, privateRoot: priv, confDir });
    expect(list).toEqual([
      {
        ct: "101",
        privateDir: join(priv, "101"),
        descriptorPath: join(priv, "101", "root.hdd", "DiskDescriptor.xml"),
        configPath: join(priv, "101", "ve.conf"),
        status: "running",
      },
      {
        ct: "102",
        privateDir: join(priv, "102"),
        descriptorPath: join(priv, "102", "root.hdd", "DiskDescriptor.xml"),
        configPath: join(confDir, "102.conf"),
        status: "stopped",
      },
      { ct: "104", privateDir: join(priv, "104"), descriptorPath: join(priv, "104", "root.hdd", "DiskDescriptor.xml"), configPath: null, status: "running" },
      {
        ct: "200",
        privateDir: join(dir, "other place", "200"),
        descriptorPath: join(dir, "other place", "200", "root.hdd", "DiskDescriptor.xml"),
        configPath: null,
        status: "stopped",
      },
    ]);
  });

  it("falls back to scanning the private root without vzlist", async () => {
    const lines: string[] = [];
    const list = await listContainers({ vzlistBin: join(dir, "no-vzlist"), privateRoot: priv, confDir, log: (l) => lines.push(l) });
    expect(list.map((c) => [c.ct, c.status, c.configPath])).toEqual([
      ["101", "unknown", join(priv, "101", "ve.conf")],
      ["102", "unknown", join(confDir, "102.conf")],
      ["104", "unknown", null],
      ["105", "unknown", null],
    ]);
    expect(lines).toEqual([`${join(dir, "no-vzlist")} not found; scanning ${priv}/*/root.hdd/DiskDescriptor.xml`]);
    expect(await listContainers({ vzlistBin: join(dir, "no-vzlist"), privateRoot: join(dir, "nothing") })).toEqual([]);
  });

  it("resolves CTIDs in the given order, falling back to the private root", async () => {
    const got = await resolveContainers(["104", "101", "105", "104"], { vzlistBin: vzlist, privateRoot: priv, confDir });
    expect(got.map((c) => [c.ct, c.status])).toEqual([
      ["104", "running"],
      ["101", "running"],
      ["105", "unknown"],
    ]);
  });

  it("names the container and where it looked when a CTID is unknown", async () => {
    await expect(resolveContainers(["101", "999"], { vzlistBin: vzlist, privateRoot: priv, confDir })).rejects.toThrow(
      `unknown container 999: not listed by ${vzlist} and no ${join(priv, "999", "root.hdd", "DiskDescriptor.xml")}`,
    );
    await expect(resolveContainers(["999"], { vzlistBin: join(dir, "no-vzlist"), privateRoot: priv })).rejects.toThrow(
      `unknown container 999: ${join(dir, "no-vzlist")} not found and no ${join(priv, "999", "root.hdd", "DiskDescriptor.xml")}`,
    );
    await expect(resolveContainers(["103"], { vzlistBin: vzlist, privateRoot: priv, confDir })).rejects.toThrow(
      `container 103 has no ploop disk: ${join(priv, "103", "root.hdd", "DiskDescriptor.xml")} does not exist (simfs container?)`,
    );
    await expect(resolveContainers(["../etc"], { vzlistBin: vzlist, privateRoot: priv })).rejects.toThrow('invalid container id "../etc"');
  });

  it("treats vzlist's 'no containers' as an empty list and other failures as errors", async () => {
    const none = await script(dir, "vzlist-none", 'echo "Container(s) not found" >&2; exit 1');
    expect(await listContainers({ vzlistBin: none, privateRoot: priv })).toEqual([]);
    const broken = await script(dir, "vzlist-broken", 'echo "Unable to open /proc/vz/veinfo" >&2; exit 5');
    await expect(listContainers({ vzlistBin: broken, privateRoot: priv })).rejects.toThrow(
      `${broken} -a -H -o ctid,private,status failed (exit 5): Unable to open /proc/vz/veinfo`,
    );
  });
});
