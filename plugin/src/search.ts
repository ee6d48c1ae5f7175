import { App, Notice, SuggestModal } from "obsidian";
import type { ApiClient, SearchResult } from "./api";
import { citationTarget } from "./citations";

const DEBOUNCE_MS = 250;

export class SearchModal extends SuggestModal<SearchResult> {
  private latest = 0;

  constructor(
    app: App,
    private readonly client: ApiClient,
    private readonly mode: () => "hybrid" | "keyword" | "semantic",
  ) {
    super(app);
    this.setPlaceholder("Search your notes (by meaning and by words)…");
  }

  /** Results as you type: only the last query of a pause of DEBOUNCE_MS is sent. */
  async getSuggestions(query: string): Promise<SearchResult[]> {
    const mine = ++this.latest;
    if (!query.trim()) return [];
    await new Promise((resolve) => setTimeout(resolve, DEBOUNCE_MS));
    if (mine !== this.latest) return [];
    try {
      return await this.client.search(query, { k: 20, mode: this.mode() });
    } catch (e) {
      new Notice(`AI Agent search: ${e instanceof Error ? e.message : String(e)}`);
      return [];
    }
  }

  renderSuggestion(r: SearchResult, el: HTMLElement): void {
    el.createDiv({ text: r.title });
    if (r.heading_path.length) el.createDiv({ cls: "oaa-heading", text: r.heading_path.join(" › ") });
    el.createDiv({ cls: "oaa-snippet", text: r.snippet });
  }

  onChooseSuggestion(r: SearchResult, evt: MouseEvent | KeyboardEvent): void {
    // Ctrl/Cmd opens it in a new pane.
    void this.app.workspace.openLinkText(citationTarget(r), "", evt.ctrlKey || evt.metaKey);
  }
}
