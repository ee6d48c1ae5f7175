/** The test page's script: the plugin's chat pane (in a right sidebar) and search modal, mounted with the
 * DOM-backed fake over a real server (reached through the page's own origin, which proxies it). */

import { ApiClient } from "../../src/api";
import { ChatView } from "../../src/chat";
import { SearchModal } from "../../src/search";
import { App, Notice, WorkspaceLeaf } from "./obsidian-dom";

declare global {
  interface Window {
    harness: { ready: boolean; openSearch(): void; opened: App["workspace"]["opened"]; notices: string[] };
  }
}

async function main(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const settings = { serverUrl: location.origin, apiKey: params.get("key") ?? "" };
  const app = new App();
  const client = new ApiClient(() => settings);
  const chat = new ChatView(new WorkspaceLeaf(app) as never, client);
  document.querySelector(".mod-right-split")!.appendChild(chat.containerEl);
  await chat.onOpen();
  window.harness = {
    ready: true,
    openSearch: () => new SearchModal(app as never, client, () => "hybrid").open(),
    opened: app.workspace.opened,
    notices: Notice.shown,
  };
}

void main();
