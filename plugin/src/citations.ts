/** Where a citation leads: the note at its heading, or the PDF at its page, as a link `openLinkText` takes. */

import type { Citation } from "./api";

export function citationTarget(c: Pick<Citation, "path" | "heading_path" | "page" | "kind">): string {
  if (c.kind === "pdf" && c.page) return `${c.path}#page=${c.page}`;
  const heading = c.heading_path.length ? c.heading_path[c.heading_path.length - 1] : "";
  return heading ? `${c.path}#${heading}` : c.path;
}
