import { App, Notice, SuggestModal } from "obsidian";
import type { ApiClient, SearchOptions, SearchResult } from "./api";
import { openCitation } from "./citations";

const DEBOUNCE_MS = 250;

export interface ParsedQuery {
  /** The words searched for, the filters taken out. */
  text: string;
  /** `folder:Some/Path` or `folder:"Some Path"`: only notes under this folder. */
  folder?: string;
  /** `tag:#x` (or `tag:x`): only notes with this tag or a tag nested under it. */
  tag?: string;
}

const FILTER = /(^|\s)(folder|tag):(?:"([^"]*)"?|(\S*))/gi;

/** The query's `folder:` and `tag:` filters (the last of each wins), mapped to /api/search's `folder`
 * and `tag` fields; a filter with no value yet (still being typed) is no filter. */
export function parseQuery(query: string): ParsedQuery {
  const parsed: ParsedQuery = { text: "" };
  const text = query.replace(FILTER, (_all, lead: string, name: string, quoted?: string, bare?: string) => {
    const value = (quoted ?? bare ?? "").trim();
    if (name.toLowerCase() === "tag") {
      const tag = value.replace(/^#+/, "");
      if (tag) parsed.tag = tag;
    } else {
      const folder = value.replace(/^\/+|\/+$/g, "");
      if (folder) parsed.folder = folder;
    }
    return lead;
  });
  parsed.text = text.replace(/\s+/g, " ").trim();
  return parsed;
}

export class SearchModal extends SuggestModal<SearchResult> {
  private latest = 0;

  constructor(
    app: App,
    private readonly client: ApiClient,
    private readonly mode: () => "hybrid" | "keyword" | "semantic",
  ) {
    super(app);
    this.setPlaceholder("Search your notes… (folder:Path, tag:#tag to narrow)");
    this.emptyStateText = "No notes found. Narrow with folder:Some/Path or tag:#tag; quote a folder with spaces.";
    this.setInstructions([
      { command: "↵", purpose: "open at the heading" },
      { command: "ctrl ↵", purpose: "open in a new pane" },
      { command: "folder: tag:", purpose: "filter" },
    ]);
  }

  /** Results as you type: only the last query of a pause of DEBOUNCE_MS is sent. */
  async getSuggestions(query: string): Promise<SearchResult[]> {
    const mine = ++this.latest;
    const { text, folder, tag } = parseQuery(query);
    if (!text) return [];
    await new Promise((resolve) => setTimeout(resolve, DEBOUNCE_MS));
    if (mine !== this.latest) return [];
    const options: SearchOptions = { k: 20, mode: this.mode() };
    if (folder) options.folder = folder;
    if (tag) options.tag = tag;
    try {
      return await this.client.search(text, options);
    } catch (e) {
      new Notice(`AI Agent search: ${e instanceof Error ? e.message : String(e)}`);
      return [];
    }
  }

  renderSuggestion(r: SearchResult, el: HTMLElement): void {
    el.createDiv({ cls: "oaa-title", text: r.title });
    const where = r.path.includes("/") ? r.path.slice(0, r.path.lastIndexOf("/")) : "";
    const heading = r.heading_path.join(" › ");
    if (heading || where) el.createDiv({ cls: "oaa-heading", text: [where, heading].filter(Boolean).join(" · ") });
    el.createDiv({ cls: "oaa-snippet", text: r.snippet });
  }

  onChooseSuggestion(r: SearchResult, evt: MouseEvent | KeyboardEvent): void {
    // Ctrl/Cmd opens it in a new pane.
    void openCitation(this.app.workspace, r, evt.ctrlKey || evt.metaKey);
  }
}
