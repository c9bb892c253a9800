/**
 * Names and paths of a filesystem as people read and type them. Names are bytes; most are
 * UTF-8, some are not, and some contain control characters that would break a listing.
 */

/**
 * A path for people: the components joined with "/", each shown as UTF-8 when it is valid
 * and printable, with "\\" and any other byte (control characters, invalid UTF-8) escaped
 * as "\xNN". parsePath reverses it, so a listed path can be pasted into dump or restore.
 */
export function displayPath(components: readonly Buffer[]): string {
  return `/${components.map(displayName).join("/")}`;
}

export function displayName(name: Buffer): string {
  const text = name.toString("utf8");
  if (Buffer.from(text, "utf8").equals(name) && !/[\x00-\x1f\x7f\\]/.test(text)) return text;
  let out = "";
  let i = 0;
  while (i < name.length) {
    const b = name[i]!;
    if (b === 0x5c) {
      out += "\\\\";
      i++;
      continue;
    }
    if (b >= 0x20 && b < 0x7f) {
      out += String.fromCharCode(b);
      i++;
      continue;
    }
    // a valid multi-byte UTF-8 sequence stays readable
    const len = b >= 0xf0 && b < 0xf5 ? 4 : b >= 0xe0 ? 3 : b >= 0xc2 && b < 0xe0 ? 2 : 0;
    if (len > 0 && i + len <= name.length) {
      const piece = name.subarray(i, i + len);
      const decoded = piece.toString("utf8");
      if (Buffer.from(decoded, "utf8").equals(piece) && !decoded.includes("\ufffd")) {
        out += decoded;
        i += len;
        continue;
      }
    }
    out += `\\x${b.toString(16).padStart(2, "0")}`;
    i++;
  }
  return out;
}

/** The bytes of a path typed by a person: UTF-8, with "\\" and "\xNN" escapes. */
export function parsePath(text: string): Buffer {
  if (!text.includes("\\")) return Buffer.from(text, "utf8");
  const parts: Buffer[] = [];
  let plain = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === "\\" && text[i + 1] === "\\") {
      plain += "\\";
      i++;
    } else if (c === "\\" && text[i + 1] === "x" && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 2, i + 4))) {
      parts.push(Buffer.from(plain, "utf8"), Buffer.from([parseInt(text.slice(i + 2, i + 4), 16)]));
      plain = "";
      i += 3;
    } else {
      plain += c;
    }
  }
  parts.push(Buffer.from(plain, "utf8"));
  return Buffer.concat(parts);
}
