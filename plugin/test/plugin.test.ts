/** End to end: the BUILT plugin (main.js, as `npm run build` writes it and Obsidian loads it) in Node, with
 * the fake `obsidian` module as the only thing it may require, over the notes of a real vault folder,
 * against the real `serve` process that test/server.ts started. `npm test` builds main.js first. */

import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { compileFunction } from "node:vm";
import { afterAll, beforeAll, describe, expect, inject, it, vi } from "vitest";
import { ApiClient, type Answer, type JobAccepted } from "../src/api";
import type AiAgentPlugin from "../src/main";
import * as obsidian from "./fake-obsidian";
import { App, FakeEl, FileSystemAdapter, MarkdownView, Modal, Notice, TFile, WorkspaceLeaf } from "./fake-obsidian";

const server = inject("server");
const ROOT = resolve(import.meta.dirname, "..");
const MAIN = join(ROOT, "main.js");

function newestSource(dir: string): number {
  return Math.max(
    ...readdirSync(dir).map((name) => {
      const full = join(dir, name);
      return statSync(full).isDirectory() ? newestSource(full) : statSync(full).mtimeMs;
    }),
  );
}

/** main.js evaluated as Obsidian does it: a CommonJS module whose `require` has `obsidian` and nothing
 * else (there are no Node modules on mobile). Returns the plugin class and what the bundle required. */
function loadBuiltPlugin(): { Plugin: typeof AiAgentPlugin; required: string[] } {
  if (statSync(MAIN).mtimeMs < newestSource(join(ROOT, "src"))) {
    throw new Error(`${MAIN} is older than src/: run \`npm run build\` (\`npm test\` does) before this test`);
  }
  const required: string[] = [];
  const require = (name: string): unknown => {
    required.push(name);
    if (name === "obsidian") return obsidian;
    throw new Error(`main.js requires '${name}', which Obsidian does not provide`);
  };
  const module = { exports: {} as { default?: unknown } };
  compileFunction(readFileSync(MAIN, "utf8"), ["module", "exports", "require"], { filename: MAIN })(module, module.exports, require);
  return { Plugin: (module.exports.default ?? module.exports) as typeof AiAgentPlugin, required };
}

function markdownUnder(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      if (statSync(full).isDirectory()) {
        if (!name.startsWith(".")) visit(full);
      } else if (name.endsWith(".md")) out.set(relative(root, full).split("\\").join("/"), readFileSync(full, "utf8"));
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

// Three sections, each long enough (40 tokens and more) to be a chunk of its own.
const NOTE = [
  "# From the plugin",
  "",
  "The zebracorn pasture is fenced with oak posts and three rails, and the gate on its northern side is",
  "kept shut at night so that the herd stays on the meadow between the river and the old mill.",
  "",
  "## Feeding",
  "",
  "Zebracorns graze on clover at dawn and on thistles at dusk; in winter they are given hay from the",
  "barn loft twice a day, with a bucket of oats for the foals and the oldest mares of the herd.",
  "",
  "## Stabling",
  "",
  "Each zebracorn has a stall lined with straw that is changed every morning; the stalls face south so",
  "that the sun dries them, and the water troughs are scrubbed on Sundays by whoever keeps the stable.",
  "",
].join("\n");

describe("the built plugin against the real server", () => {
  const client = new ApiClient(() => ({ serverUrl: server.url, apiKey: server.key }));
  let built: ReturnType<typeof loadBuiltPlugin>;
  let app: App;
  let plugin: AiAgentPlugin & obsidian.Plugin;
  const status = new FakeEl();

  beforeAll(() => {
    vi.stubGlobal("window", globalThis);
    built = loadBuiltPlugin();
    app = new App();
    app.vault.files = markdownUnder(server.vault);
    plugin = new built.Plugin(app as never, {} as never) as AiAgentPlugin & obsidian.Plugin;
    plugin.data = { settings: { serverUrl: server.url, apiKey: server.key, syncEnabled: true } };
    plugin.addStatusBarItem = () => status as never;
  });

  afterAll(() => {
    plugin.onunload();
    vi.unstubAllGlobals();
  });

  const command = (id: string) => plugin.commands.get(id)!.callback!;
  const manifest = () => client.manifest();
  const event = (name: "create" | "modify" | "delete", path: string) => app.vault.trigger(name, new TFile(path));
  const upserts = async () =>
    (await client.request<{ jobs: (JobAccepted & { payload: { paths: string[] } })[] }>("GET", "/api/jobs?kind=upsert_note&limit=20")).jobs;

  it("requires only `obsidian`, listens to the vault once the layout is ready, and finds nothing to push", async () => {
    await plugin.onload();
    expect(new Set(built.required)).toEqual(new Set(["obsidian"])); // once per module of the bundle
    expect([...plugin.commands.keys()].sort()).toEqual([
      "ask-note",
      "ask-selection",
      "open-chat",
      "reindex",
      "related",
      "search",
      "sync-now",
      "sync-state",
      "test-connection",
    ]);
    event("create", "Loading.md");
    expect(plugin.sync).toBeNull(); // vault load events are not sync work

    app.workspace.layoutReady();
    await until(() => status.text === "AI sync: synced", "the first sync");
    expect(plugin.sync!.pending.size).toBe(0); // the server already holds this vault
  });

  it("pushes a new note, and an edit of it reaches search", async () => {
    app.vault.files.set("Inbox/From the plugin.md", NOTE);
    event("create", "Inbox/From the plugin.md");
    expect(plugin.sync!.pending.get("Inbox/From the plugin.md")).toBe("put");
    await until(async () => (await client.search("zebracorn pasture", { k: 1 }))[0]?.path === "Inbox/From the plugin.md", "the pushed note");

    app.vault.files.set("Inbox/From the plugin.md", NOTE.replace("three rails", "three rails of larch"));
    event("modify", "Inbox/From the plugin.md");
    await until(async () => {
      const [hit] = await client.search("zebracorn pasture rails of larch", { k: 1 });
      return hit?.path === "Inbox/From the plugin.md" && hit.snippet.includes("larch");
    }, "the edit");
  });

  it("sends a rename as a move: the renamed note kept its vectors and its old path is gone", async () => {
    const before = await client.status();
    app.vault.files.set("Archive/Zebracorns.md", app.vault.files.get("Inbox/From the plugin.md")!);
    app.vault.files.delete("Inbox/From the plugin.md");
    app.vault.trigger("rename", new TFile("Archive/Zebracorns.md"), "Inbox/From the plugin.md");
    expect(plugin.sync!.pending.get("Archive/Zebracorns.md")).toBe("move:Inbox/From the plugin.md");
    await until(async () => {
      const m = await manifest();
      return "Archive/Zebracorns.md" in m && !("Inbox/From the plugin.md" in m);
    }, "the move");

    // One job indexed the new path as a move of the old one: a new file name is a new title, part of
    // every chunk's embedded text, and still nothing was embedded.
    let job: Awaited<ReturnType<typeof upserts>>[number] | undefined;
    await until(async () => {
      [job] = (await upserts()).filter((j) => j.payload.paths.includes("Archive/Zebracorns.md"));
      return job?.status === "succeeded";
    }, "the move's job");
    if (!job) throw new Error("no job for the move");
    expect(job.payload.paths.sort()).toEqual(["Archive/Zebracorns.md", "Inbox/From the plugin.md"]);
    expect(job.result).toMatchObject({ moved: 1, indexed: 1, chunks_embedded: 0 });
    expect(Number(job.result!.chunks_reused)).toBeGreaterThan(1);
    const after = await client.status();
    expect([after.index.sources, after.index.chunks, after.index.vectors]).toEqual([before.index.sources, before.index.chunks, before.index.vectors]);
    expect(readdirSync(join(server.vault, "Archive"))).toContain("Zebracorns.md");
    expect(() => statSync(join(server.vault, "Inbox", "From the plugin.md"))).toThrow();

    // The search command's modal finds it under its new name, and not at the old path.
    Modal.opened.length = 0;
    command("search")();
    const modal = Modal.opened[0] as unknown as { getSuggestions(q: string): Promise<{ path: string; title: string }[]> };
    const found = await modal.getSuggestions("zebracorns graze on clover at dawn");
    expect(found[0]).toMatchObject({ path: "Archive/Zebracorns.md", title: "Zebracorns" });
    expect(found.some((r) => r.path === "Inbox/From the plugin.md")).toBe(false);
    const inFolder = await modal.getSuggestions('folder:"Getting Started" due date');
    expect(inFolder.map((r) => r.path)).toContain("Getting Started/Dates.md");
    expect(inFolder.every((r) => r.path.startsWith("Getting Started/"))).toBe(true);
  });

  it("removes a deleted note from the server and from search", async () => {
    app.vault.files.delete("Archive/Zebracorns.md");
    event("delete", "Archive/Zebracorns.md");
    await until(async () => !("Archive/Zebracorns.md" in (await manifest())), "the deletion");
    expect((await client.search("zebracorns graze on clover", { k: 5 })).some((r) => r.path === "Archive/Zebracorns.md")).toBe(false);
    await until(() => plugin.sync!.pending.size === 0 && status.text === "AI sync: synced", "the queue");
    expect((plugin.data as { sync: unknown }).sync).toEqual({ pending: {} });
  });

  it("streams an answer in the chat pane whose citations, inserted or opened, lead to notes of the vault", async () => {
    const asked: string[] = [];
    const realFetch = globalThis.fetch;
    vi.stubGlobal("fetch", async (url: string, init: RequestInit) => {
      const response = await realFetch(url, init);
      asked.push(`${url} ${response.headers.get("content-type")}`);
      return response;
    });
    const chatLeaf = new WorkspaceLeaf(app);
    const chat = plugin.views.get("obsidian-ai-agent-chat")!(chatLeaf) as {
      contentEl: FakeEl;
      onOpen(): Promise<void>;
      submit(q: string): Promise<Answer | null>;
    };
    chatLeaf.view = chat;
    await chat.onOpen();
    const answer = (await chat.submit("How do I make a task repeat every week?"))!;
    expect(asked).toHaveLength(1); // streamed: no plain request as a fallback
    expect(asked[0]).toMatch(new RegExp(`^${server.url}/api/ask text/event-stream`));
    expect(answer.citations.length).toBeGreaterThan(0);
    for (const c of answer.citations) expect(app.vault.files.has(c.path), c.path).toBe(true);

    const out = chat.contentEl.all();
    const links = out.filter((e) => e.tag === "a");
    expect(links).toHaveLength(answer.citations.length);
    links[0].onclick!({ preventDefault() {} });
    const button = (text: string) => out.find((e) => e.tag === "button" && e.text === text)!;
    button("Open all sources").onclick!({});
    await new Promise((r) => setTimeout(r, 0));
    const [first, ...tabs] = app.workspace.opened;
    expect(first.newLeaf).toBeUndefined();
    expect(tabs.length).toBeGreaterThan(0);
    for (const o of [first, ...tabs]) expect(app.vault.files.has(o.linktext.split("#")[0]), o.linktext).toBe(true);
    expect(tabs.every((o) => o.newLeaf === "tab")).toBe(true);
    expect(new Set(tabs.map((o) => o.linktext)).size).toBe(tabs.length);

    // Insert at cursor: into the note last edited (the pane, clicked, is the active leaf now).
    app.vault.files.set("Inbox/Draft.md", "# Draft\n\n");
    const noteLeaf = app.workspace.getLeaf();
    await noteLeaf.openFile(new TFile("Inbox/Draft.md"));
    app.workspace.setActiveLeaf(noteLeaf);
    app.workspace.setActiveLeaf(chatLeaf);
    Notice.shown.length = 0;
    button("Insert at cursor").onclick!({});
    const text = (noteLeaf.view as MarkdownView).editor.getValue();
    expect(text.startsWith(`# Draft\n\n${answer.text.trim()}\n\nSources:\n- \\[${answer.citations[0].n}\\] [[`)).toBe(true);
    const targets = [...text.matchAll(/\[\[([^\]|#]+)/g)].map((m) => m[1]);
    expect(targets).toHaveLength(answer.citations.length);
    const names = new Set([...app.vault.files.keys()].flatMap((p) => [p.replace(/\.md$/, ""), p.slice(p.lastIndexOf("/") + 1).replace(/\.md$/, "")]));
    for (const t of targets) expect(names.has(t), t).toBe(true);
    expect(Notice.shown).toEqual(["AI Agent: the answer was inserted into Draft."]);
    vi.stubGlobal("fetch", realFetch);
  });

  it("asks about the selection in the chat pane, which streams an answer whose citations are notes of the vault", async () => {
    const asked: string[] = [];
    const realFetch = globalThis.fetch;
    vi.stubGlobal("fetch", async (url: string, init: RequestInit) => {
      const response = await realFetch(url, init);
      asked.push(`${url} ${response.headers.get("content-type")} ${init.body as string}`);
      return response;
    });
    const leaf = app.workspace.getLeaf();
    await leaf.openFile(new TFile("Getting Started/Recurring Tasks.md"));
    app.workspace.setActiveLeaf(leaf);
    const view = leaf.view as MarkdownView;
    const passage = "For example: `🔁 every weekday` means the task will repeat every week on Monday through Friday.";
    const start = view.editor.getValue().indexOf(passage);
    view.editor.setSelection(view.editor.offsetToPos(start), view.editor.offsetToPos(start + passage.length));
    const ask = plugin.commands.get("ask-selection")!.editorCheckCallback!;
    expect(ask(true, view.editor, view)).toBe(true);
    ask(false, view.editor, view);

    const pane = () => app.workspace.getLeavesOfType("obsidian-ai-agent-chat")[0]?.view as { contentEl: FakeEl } | undefined;
    await until(() => !!pane()?.contentEl.all().some((e) => e.tag === "button" && e.text === "Copy"), "the answer in the chat pane");
    vi.stubGlobal("fetch", realFetch);
    expect(asked).toHaveLength(1); // streamed: no plain request as a fallback
    expect(asked[0]).toContain(`${server.url}/api/ask text/event-stream`);
    expect(asked[0]).toContain(JSON.stringify(`What do my notes say about this passage (from Recurring Tasks)?\n\n"${passage}"`));
    const out = pane()!.contentEl.all();
    const links = out.filter((e) => e.tag === "a");
    expect(links.length).toBeGreaterThan(0);
    expect(out.some((e) => e.text.startsWith("Could not answer"))).toBe(false);
    app.workspace.opened.length = 0;
    for (const a of links) a.onclick!({ preventDefault() {} });
    await new Promise((r) => setTimeout(r, 0));
    expect(app.workspace.opened.length).toBe(links.length);
    for (const o of app.workspace.opened) expect(app.vault.files.has(o.linktext.split("#")[0]), o.linktext).toBe(true);
    expect(app.workspace.opened.some((o) => o.linktext.startsWith("Getting Started/Recurring Tasks.md"))).toBe(true);

    // About the current note: the same pane, an answer drawn from that note alone.
    const before = out.filter((e) => e.tag === "button" && e.text === "Copy").length;
    plugin.commands.get("ask-note")!.checkCallback!(false);
    await until(() => pane()!.contentEl.all().filter((e) => e.tag === "button" && e.text === "Copy").length === before + 1, "the second answer");
    expect(app.workspace.getLeavesOfType("obsidian-ai-agent-chat")).toHaveLength(1);
    expect(pane()!.contentEl.textContent).toContain("What are the main points of Recurring Tasks?");
    const cited = pane()!.contentEl.all().filter((e) => e.tag === "a").slice(links.length);
    expect(cited.length).toBeGreaterThan(0);
    app.workspace.opened.length = 0;
    for (const a of cited) a.onclick!({ preventDefault() {} });
    await new Promise((r) => setTimeout(r, 0));
    for (const o of app.workspace.opened) expect(o.linktext.split("#")[0]).toBe("Getting Started/Recurring Tasks.md");
  });

  it("starts a reindex with the admin key and says when it is done; a key without admin gets told it needs one", async () => {
    Notice.shown.length = 0;
    plugin.jobPollMs = 200;
    const job = await plugin.reindex();
    expect(job).not.toBeNull();
    const id = job!.job_id!;
    expect(Notice.shown[0]).toMatch(new RegExp(`^AI Agent: the server is reindexing its vault: job ${id} \\((queued|running), bulk lane\\)`));
    const detail = await client.request<{ kind: string; payload: { full: boolean } }>("GET", `/api/jobs/${id}`);
    expect(detail).toMatchObject({ kind: "reindex", payload: { full: false } });
    await until(() => Notice.shown.length >= 2, "the reindex's end");
    expect(Notice.shown[1]).toMatch(new RegExp(`^AI Agent: reindex job ${id} done: \\d+ indexed, .*\\d+ unchanged, \\d+ chunks embedded in [\\d.]+ s\\.$`));

    const made = await client.request<{ key: string }>("POST", "/api/keys", { name: "plugin-e2e-rw", scopes: ["read", "write"] });
    plugin.settings.apiKey = made.key;
    Notice.shown.length = 0;
    await plugin.commands.get("reindex")!.callback!();
    expect(Notice.shown).toHaveLength(1);
    expect(Notice.shown[0]).toMatch(/^AI Agent: reindexing needs an admin key, and this key lacks the admin scope/);
    plugin.settings.apiKey = server.key;
  });

  it("shows the sync state of every note, and keeps sync off for a server that reads this vault's folder itself", async () => {
    Modal.opened.length = 0;
    plugin.commands.get("sync-state")!.callback!();
    const modal = Modal.opened[0];
    const rows = modal.contentEl.all().filter((e) => e.classes.has("oaa-sync-file"));
    expect(rows.length).toBe(app.vault.getMarkdownFiles().length);
    expect(modal.contentEl.all().find((e) => e.classes.has("oaa-sync-summary"))!.text).toBe("AI sync: synced");

    // The plugin in the server's own vault folder: the admin key sees the server's vault in /status.
    const adapter = app.vault.adapter;
    app.vault.adapter = new FileSystemAdapter(server.vault);
    const manifests = () => obsidian.requests.filter((r) => r.url.endsWith("/api/notes/manifest")).length;
    const before = manifests();
    Notice.shown.length = 0;
    await command("sync-now")();
    expect(manifests()).toBe(before); // nothing compared, nothing pushed
    expect(status.text).toBe("AI sync: off (the server reads this vault)");
    expect(Notice.shown[0]).toContain(`reads this vault's folder itself (${server.vault}): sync stays off and nothing is pushed`);
    await command("test-connection")();
    expect(Notice.shown[1]).toMatch(/; it reads this vault's folder itself \(.+\): leave sync off$/);

    app.vault.adapter = adapter;
    await command("sync-now")();
    expect(manifests()).toBe(before + 1);
    await until(() => status.text === "AI sync: synced", "sync back on");
  });

  it("says in notices that a refused key or a dead server is what is wrong", async () => {
    const chat = plugin.views.get("obsidian-ai-agent-chat")!(new WorkspaceLeaf(app)) as { onOpen(): Promise<void>; submit(q: string): Promise<unknown> };
    await chat.onOpen();
    const notices = async (): Promise<string[]> => {
      Notice.shown.length = 0;
      await command("test-connection")();
      await chat.submit("How do I make a task repeat every week?");
      await command("sync-now")();
      await until(() => Notice.shown.length >= 3, "the notices");
      return [...Notice.shown];
    };

    plugin.settings.apiKey = "not-a-key";
    const refused = await notices();
    expect(refused[0]).toMatch(/^Connection failed \(401 unauthorized\): the API key was refused; check it in the plugin's settings/);
    expect(refused[1]).toMatch(/^AI Agent: the API key was refused; check it in the plugin's settings/);
    expect(refused[2]).toMatch(/^AI Agent sync stopped: the API key was refused/);

    plugin.settings.apiKey = server.key;
    plugin.settings.serverUrl = "http://127.0.0.1:9";
    const dead = await notices();
    expect(dead[0]).toMatch(/^Connection failed \(unreachable\): cannot reach the server at http:\/\/127\.0\.0\.1:9/);
    expect(dead[1]).toMatch(/^AI Agent: cannot reach the server at http:\/\/127\.0\.0\.1:9/);
    expect(dead[2]).toMatch(/^AI Agent sync stopped: cannot reach the server/);
    plugin.settings.serverUrl = server.url;
  });
});
