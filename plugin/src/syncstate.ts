import { App, Modal } from "obsidian";
import type { FileState } from "./sync";

/** One file's state, as the modal shows it. */
export function fileStateLabel(f: FileState): string {
  const error = "error" in f && f.error !== undefined ? `error: ${f.error} (still ` : "";
  const close = error ? ")" : "";
  switch (f.state) {
    case "synced":
      return "synced";
    case "unknown":
      return "not compared with the server yet";
    case "excluded":
      return "not synced (outside the synced folders)";
    case "put":
      return `${error}pending put${close}`;
    case "delete":
      return `${error}pending delete${close}`;
    case "move":
      return `${error}pending move from ${f.from}${close}`;
  }
}

/** "3 synced · 1 pending · 1 error · 2 not synced": the counts of the list, the empty ones left out. */
export function fileStateCounts(files: FileState[]): string {
  const n = { synced: 0, unknown: 0, pending: 0, error: 0, excluded: 0 };
  for (const f of files) {
    if (f.state === "synced" || f.state === "unknown" || f.state === "excluded") n[f.state]++;
    else if ("error" in f && f.error !== undefined) n.error++;
    else n.pending++;
  }
  const parts: [number, string][] = [
    [n.synced, "synced"],
    [n.pending, "pending"],
    [n.error, n.error === 1 ? "error" : "errors"],
    [n.unknown, "not compared yet"],
    [n.excluded, "outside the synced folders"],
  ];
  return parts.filter(([count]) => count > 0).map(([count, what]) => `${count} ${what}`).join(" · ") || "no notes";
}

/** Every file the sync knows with its state (read-only): queued ones (with their last error) first. */
export class SyncStateModal extends Modal {
  constructor(
    app: App,
    /** Where sync stands: off, the status bar's text, or why it does not run. */
    private readonly summary: string,
    private readonly files: FileState[],
  ) {
    super(app);
  }

  onOpen(): void {
    const { contentEl } = this;
    this.setTitle("AI Agent: sync state per file");
    contentEl.empty();
    contentEl.addClass("oaa-sync-state");
    contentEl.createDiv({ cls: "oaa-sync-summary", text: this.summary });
    if (!this.files.length) return;
    contentEl.createDiv({ cls: "oaa-sync-counts", text: fileStateCounts(this.files) });
    const list = contentEl.createDiv({ cls: "oaa-sync-files" });
    for (const f of this.files) {
      const row = list.createDiv({ cls: `oaa-sync-file oaa-sync-${"error" in f && f.error !== undefined ? "error" : f.state}` });
      row.createSpan({ cls: "oaa-sync-path", text: f.path });
      row.createSpan({ cls: "oaa-sync-label", text: fileStateLabel(f) });
    }
  }

  onClose(): void {
    this.contentEl.empty();
  }
}
