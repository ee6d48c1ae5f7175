/** The test page's script: the plugin's chat pane (in a right sidebar) and search modal, mounted with the
 * DOM-backed fake over a real server (reached through the page's own origin, which proxies it). */

import { ApiClient } from "../../src/api";
import { ChatView } from "../../src/chat";
import { SearchModal } from "../../src/search";
import { App, MarkdownView, Notice, TFile, WorkspaceLeaf } from "./obsidian-dom";

declare global {
  interface Window {
    harness: {
      ready: boolean;
      openSearch(): void;
      opened: App["workspace"]["opened"];
      notices: string[];
      /** The note open in the main area, as its editor holds it; `showNote` draws it there. */
      note(): string;
      showNote(): void;
    };
  }
}

const NOTE = "Draft.md";

async function main(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const settings = { serverUrl: location.origin, apiKey: params.get("key") ?? "" };
  const app = new App();
  const client = new ApiClient(() => settings);
  // A note open in the main area (the answer's "Insert at cursor" goes there), then the chat pane in the
  // right sidebar, the active leaf once it is clicked.
  app.vault.files.set(NOTE, "");
  const noteLeaf = app.workspace.getLeaf();
  await noteLeaf.openFile(new TFile(NOTE));
  app.workspace.setActiveLeaf(noteLeaf);
  const chatLeaf = new WorkspaceLeaf(app);
  const chat = new ChatView(chatLeaf as never, client);
  chatLeaf.view = chat;
  app.workspace.setActiveLeaf(chatLeaf);
  document.querySelector(".mod-right-split")!.appendChild(chat.containerEl);
  await chat.onOpen();
  const editor = (noteLeaf.view as MarkdownView).editor;
  window.harness = {
    ready: true,
    openSearch: () => new SearchModal(app as never, client, () => "hybrid").open(),
    opened: app.workspace.opened,
    notices: Notice.shown,
    note: () => editor.getValue(),
    showNote: () => {
      const shown = document.querySelector(".mod-root .oaa-harness-note") ?? document.querySelector(".mod-root")!.createEl("pre", { cls: "oaa-harness-note" });
      shown.setText(editor.getValue());
    },
  };
}

void main();
