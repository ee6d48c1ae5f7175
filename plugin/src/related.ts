import { ItemView, TFile, WorkspaceLeaf } from "obsidian";
import type { ApiClient } from "./api";

export const RELATED_VIEW = "obsidian-ai-agent-related";

export class RelatedView extends ItemView {
  private shown: string | null = null;

  constructor(
    leaf: WorkspaceLeaf,
    private readonly client: ApiClient,
  ) {
    super(leaf);
  }

  getViewType(): string {
    return RELATED_VIEW;
  }

  getDisplayText(): string {
    return "Related notes";
  }

  getIcon(): string {
    return "network";
  }

  async onOpen(): Promise<void> {
    this.registerEvent(this.app.workspace.on("file-open", (file) => void this.show(file)));
    await this.show(this.app.workspace.getActiveFile());
  }

  async show(file: TFile | null): Promise<void> {
    const root = this.contentEl;
    if (!file || file.extension !== "md") {
      root.empty();
      root.createDiv({ text: "Open a note to see the notes related to it." });
      this.shown = null;
      return;
    }
    if (file.path === this.shown) return;
    this.shown = file.path;
    root.empty();
    root.createDiv({ cls: "oaa-heading", text: `Related to ${file.basename}` });
    try {
      const related = await this.client.related(file.path, 10);
      if (this.shown !== file.path) return; // another note was opened meanwhile
      if (!related.length) root.createDiv({ text: "No related notes." });
      for (const r of related) {
        const item = root.createDiv({ cls: "oaa-related-item" });
        item.createSpan({ text: r.title });
        const linked = r.links_to || r.linked_from ? " · linked" : "";
        item.createSpan({ cls: "oaa-score", text: `${r.score.toFixed(2)}${linked}` });
        item.onclick = () => void this.app.workspace.openLinkText(r.path, file.path);
      }
    } catch (e) {
      root.createDiv({ text: `Could not load related notes: ${e instanceof Error ? e.message : String(e)}` });
    }
  }
}
