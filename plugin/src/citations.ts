/** Where a citation leads: the note at its heading, or the PDF at its page; opened in Obsidian, or written
 * as a link into a note. The chat pane's citation links, its "Open all sources" and "Insert at cursor" and
 * the search modal all go through here. */

import type { App, PaneType, Workspace } from "obsidian";
import type { Citation } from "./api";

type Target = Pick<Citation, "path" | "heading_path" | "page" | "kind">;

/** A web page's citation names the page's URL as its path. */
function isWeb(c: Pick<Citation, "path">): boolean {
  return /^https?:\/\//i.test(c.path);
}

/** The `#heading` or `#page=N` part of a citation's link ("" for the note's top). */
function subpath(c: Target): string {
  if (c.kind === "pdf" && c.page) return `#page=${c.page}`;
  const heading = c.heading_path.length ? c.heading_path[c.heading_path.length - 1] : "";
  return heading ? `#${heading}` : "";
}

/** The link text `openLinkText` takes. */
export function citationTarget(c: Target): string {
  return c.path + subpath(c);
}

/** `Title — Heading › Sub`, or `Title — p. 4` for a PDF. */
function described(c: Pick<Citation, "title" | "heading_path" | "page" | "kind">): string {
  const where = c.kind === "pdf" && c.page ? `p. ${c.page}` : c.heading_path.join(" › ");
  return `${c.title}${where ? ` — ${where}` : ""}`;
}

/** How the chat pane shows a citation: `[n] Title — Heading › Sub`. */
export function citationLabel(c: Pick<Citation, "n" | "title" | "heading_path" | "page" | "kind">): string {
  return `[${c.n}] ${described(c)}`;
}

/** Opens the cited note at its heading (or the PDF at its page); `newLeaf` as `openLinkText` takes it. A
 * web page's citation opens the page. */
export async function openCitation(workspace: Workspace, c: Target, newLeaf?: PaneType | boolean): Promise<void> {
  if (isWeb(c)) {
    window.open(c.path);
    return;
  }
  await workspace.openLinkText(citationTarget(c), "", newLeaf);
}

/** Opens every citation in a tab of its own, in order; a link cited twice opens once. */
export async function openAllCitations(workspace: Workspace, cited: Target[]): Promise<number> {
  const seen = new Set<string>();
  for (const c of cited) {
    const target = citationTarget(c);
    if (seen.has(target)) continue;
    seen.add(target);
    await openCitation(workspace, c, "tab");
  }
  return seen.size;
}

/** Characters that end a wikilink's alias or a Markdown link's text. */
function plain(text: string): string {
  return text.replace(/[[\]|]/g, " ").replace(/\s+/g, " ").trim();
}

/** A link to the citation in the user's link format (wikilink or Markdown, as Obsidian's settings say),
 * from the note at `sourcePath`; a note this vault lacks gets a wikilink, a web page a Markdown link. */
export function citationLink(app: App, c: Citation, sourcePath: string): string {
  const alias = plain(described(c));
  if (isWeb(c)) return `[${alias}](<${c.path}>)`;
  // What ends a link's target, as Obsidian leaves it out of the heading links it makes itself.
  const sub = subpath(c).replace(/^#/, "").replace(/[#|^:[\]]|%%/g, " ").replace(/\s+/g, " ").trim();
  const at = sub ? `#${sub}` : "";
  const file = app.vault.getFileByPath(c.path);
  if (file) return app.fileManager.generateMarkdownLink(file, sourcePath, at, alias);
  return `[[${c.path.replace(/\.md$/i, "")}${at}|${alias}]]`;
}

/** The answer's Markdown with its sources under it, each `\[n\]` (escaped: `- [1]` would be a task) and a
 * link that opens the note at the cited heading. */
export function answerMarkdown(app: App, text: string, cited: Citation[], sourcePath: string, heading = "Sources:"): string {
  const lines = [text.trim()];
  if (cited.length) {
    lines.push("", heading, ...cited.map((c) => `- \\[${c.n}\\] ${citationLink(app, c, sourcePath)}`));
  }
  return lines.join("\n") + "\n";
}
