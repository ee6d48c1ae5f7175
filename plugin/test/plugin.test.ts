import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, inject, it, vi } from "vitest";
import { ApiClient } from "../src/api";
import AiAgentPlugin from "../src/main";
import { App, FakeEl, TFile } from "./fake-obsidian";

const server = inject("server");

function markdownUnder(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      if (statSync(full).isDirectory()) visit(full);
      else if (name.endsWith(".md")) out.set(relative(root, full).split("\\").join("/"), readFileSync(full, "utf8"));
    }
  };
  visit(root);
  return out;
}

async function until(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 45_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("the plugin", () => {
  it("listens to the vault only once the layout is ready, then syncs differences and events", async () => {
    vi.stubGlobal("window", globalThis);
    const app = new App();
    app.vault.files = markdownUnder(server.vault);
    const plugin = new AiAgentPlugin(app as never, {} as never);
    (plugin as unknown as { data: unknown }).data = { settings: { serverUrl: server.url, apiKey: server.key, syncEnabled: true } };
    const status = new FakeEl();
    plugin.addStatusBarItem = () => status as never;
    await plugin.onload();
    app.vault.trigger("create", new TFile("Loading.md"));
    expect(plugin.sync).toBeNull(); // vault load events are not sync work

    app.workspace.layoutReady();
    await until(() => status.text === "AI sync: synced", "the first sync");
    expect(plugin.sync!.pending.size).toBe(0); // the server already holds this vault: nothing pushed

    const client = new ApiClient(() => ({ serverUrl: server.url, apiKey: server.key }));
    app.vault.files.set("Inbox/Plugin event.md", "# Plugin event\n\nWritten in Obsidian.\n");
    app.vault.trigger("create", new TFile("Inbox/Plugin event.md"));
    expect(plugin.sync!.pending.get("Inbox/Plugin event.md")).toBe("put");
    await until(async () => "Inbox/Plugin event.md" in (await client.manifest()), "the pushed note");

    app.vault.files.delete("Inbox/Plugin event.md");
    app.vault.trigger("delete", new TFile("Inbox/Plugin event.md"));
    await until(async () => !("Inbox/Plugin event.md" in (await client.manifest())), "the deletion");
    expect((plugin as unknown as { data: { sync: unknown } }).data.sync).toEqual({ pending: {} });
    plugin.onunload();
    vi.unstubAllGlobals();
  });
});
