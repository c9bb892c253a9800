import { createRequire } from "node:module";

interface PackageJson {
  name: string;
  version: string;
}
/**
 * Name and version from the package.json of the installed package (or the checkout): one
 * directory above src/version.ts (tests run the sources), two above dist/src/version.js
 * (a build, installed or not). The name check skips any other package.json; "0.0.0" only
 * if neither is found (a copied dist/ without its package.json).
 */
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
