import { createRequire } from "node:module";

interface PackageJson {
  name: string;
  version: string;
}
// package.json is one directory above src/version.ts and two above dist/src/version.js (installed or not)
const require = createRequire(import.meta.url);
function loadPackage(): PackageJson {
  for (const candidate of ["../package.json", "../../package.json"]) {
    try {
      const pkg = require(candidate) as PackageJson;
      if (pkg.name === "ploopvault") return pkg;
    } catch {
      // try the next location
    }
  }
  return { name: "ploopvault", version: "0.0.0" };
}
const pkg = loadPackage();
export const TOOL_NAME = pkg.name;
export const TOOL_VERSION = pkg.version;
