/** The plugin's commands (src/main.ts with the fake `obsidian`) against a small scripted server, so that
 * each answer (a 202, a 403, a job that ends, an SSE stream) is what the test says. The same commands
 * against the real server: plugin.test.ts. */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import type { Answer, Citation } from "../src/api";
import { CHAT_VIEW, ChatView, MAX_QUESTION, noteQuestion, selectionQuestion } from "../src/chat";
import AiAgentPlugin from "../src/main";
import { DEFAULT_SETTINGS, serverVault } from "../src/settings";
import { SyncStateModal } from "../src/syncstate";
import { App, FakeEl, FileSystemAdapter, MarkdownView, Modal, Notice, TFile, WorkspaceLeaf, type Command } from "./fake-obsidian";

interface Seen {
  method: string;
  url: string;
  auth: string;
  accept: string;
  body: string;
}

type Handler = (req: Seen, res: ServerResponse) => void;

const routes = new Map<string, Handler>();
const seen: Seen[] = [];
let server: Server;
let url = "";

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

beforeAll(async () => {
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = "";
    req.on("data", (b: Buffer) => (body += b.toString()));
    req.on("end", () => {
      const s: Seen = {
        method: req.method ?? "",
        url: req.url ?? "",
        auth: req.headers.authorization ?? "",
        accept: String(req.headers.accept ?? ""),
        body,
      };
      seen.push(s);
      const handler = routes.get(`${s.method} ${s.url.split("?")[0]}`);
      if (handler) handler(s, res);
      else json(res, 404, { error: { code: "not_found", message: `no route ${s.method} ${s.url}` } });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const address = server.address();
  url = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

const cite = (n: number, path: string): Citation => ({
  n,
  path,
  title: path.replace(/^.*\//, "").replace(/\.md$/, ""),
  heading_path: [],
  start_line: 1,
  end_line: 2,
  page: null,
  kind: "note",
  snippet: "…",
  link: `obsidian://open?file=${encodeURIComponent(path)}`,
});

const answerTo = (question: string): Answer => ({
  question,
  text: "Append 🔁 every week to the task [1].",
  mode: "extractive",
  citations: [cite(1, "Getting Started/Recurring Tasks.md")],
  sources: [cite(1, "Getting Started/Recurring Tasks.md")],
  provider: "extractive",
  model: null,
  declined: false,
  notice: null,
  conversation_id: "c",
});

/** /api/ask as the server streams it: retrieval, tokens, then the answer. */
function streamAsk(req: Seen, res: ServerResponse): void {
  const { question } = JSON.parse(req.body) as { question: string };
  const answer = answerTo(question);
  res.writeHead(200, { "content-type": "text/event-stream" });
  const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  send("retrieval", { query: question, sources: answer.sources });
  for (const t of ["Append 🔁 every week ", "to the task [1]."]) send("token", { text: t });
  send("answer", { answer });
  res.end();
}

const settled = (ms = 0) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await settled(10);
  }
}

let app: App;
let plugin: AiAgentPlugin & { commands: Map<string, Command>; data: unknown };
const status = new FakeEl();

async function load(settings: Partial<typeof DEFAULT_SETTINGS> = {}): Promise<void> {
  plugin = new AiAgentPlugin(app as never, {} as never) as never;
  plugin.data = { settings: { serverUrl: url, apiKey: "the-key", ...settings } };
  (plugin as unknown as { addStatusBarItem: () => FakeEl }).addStatusBarItem = () => status;
  plugin.jobPollMs = 20;
  await plugin.onload();
  Notice.shown.length = 0; // the key moved into the secret storage
}

const command = (id: string): Command => plugin.commands.get(id)!;

async function openNote(path: string): Promise<MarkdownView> {
  const leaf = app.workspace.getLeaf();
  await leaf.openFile(new TFile(path));
  app.workspace.setActiveLeaf(leaf);
  return leaf.view as MarkdownView;
}

beforeEach(() => {
  vi.stubGlobal("window", globalThis);
  routes.clear();
  seen.length = 0;
  Notice.shown.length = 0;
  Modal.opened.length = 0;
  status.setText("");
  app = new App();
  app.vault.files.set("Getting Started/Recurring Tasks.md", "# Recurring Tasks\n\nTasks can be recurring: append 🔁 every week.\n");
  app.vault.files.set("Getting Started/Dates.md", "# Dates\n\nDue dates.\n");
  app.vault.files.set("Private/Diary.md", "# Diary\n");
});

afterEach(() => {
  plugin?.onunload();
  vi.unstubAllGlobals();
});

describe("the commands", () => {
  it("are open chat, search, related notes, ask about the selection or the note, test connection, sync now, sync state and reindex", async () => {
    await load();
    expect([...plugin.commands.values()].map((c) => `${c.id}: ${c.name}`)).toEqual([
      "open-chat: Open chat",
      "search: Search notes",
      "related: Related notes",
      "ask-selection: Ask about the selection",
      "ask-note: Ask about the current note",
      "test-connection: Test connection",
      "sync-now: Sync now",
      "sync-state: Show sync state per file",
      "reindex: Reindex the vault (admin keys)",
    ]);
  });
});

describe("Ask about the selection", () => {
  it("is offered only with a selection, and asks it in the chat pane, which streams the answer with its sources", async () => {
    routes.set("POST /api/ask", streamAsk);
    await load();
    const view = await openNote("Getting Started/Recurring Tasks.md");
    const ask = command("ask-selection").editorCheckCallback!;
    expect(ask(true, view.editor, view)).toBe(false); // nothing selected
    view.editor.setSelection({ line: 2, ch: 0 }, { line: 2, ch: 25 });
    expect(ask(true, view.editor, view)).toBe(true);
    expect(seen).toHaveLength(0); // checking asks nothing

    expect(ask(false, view.editor, view)).toBe(true);
    await until(() => seen.length === 1, "the ask");
    const body = JSON.parse(seen[0].body) as { question: string; stream: boolean; conversation_id: string };
    expect(body.question).toBe('What do my notes say about this passage (from Recurring Tasks)?\n\n"Tasks can be recurring: a"');
    expect(body.stream).toBe(true);
    expect(seen[0].accept).toBe("text/event-stream");
    expect(seen[0].auth).toBe("Bearer the-key");

    // The chat pane was opened in the right sidebar and shows the question, the answer and its source.
    const [leaf] = app.workspace.getLeavesOfType(CHAT_VIEW);
    expect(leaf.view).toBeInstanceOf(ChatView);
    expect(app.workspace.revealed).toContain(leaf);
    const pane = (leaf.view as ChatView).contentEl as unknown as FakeEl;
    await until(() => pane.all().some((e) => e.tag === "a"), "the answer's sources");
    expect(pane.textContent).toContain(body.question);
    expect(pane.textContent).toContain("Append 🔁 every week to the task [1].");
    expect(pane.all().filter((e) => e.tag === "a").map((e) => e.text)).toEqual(["[1] Recurring Tasks"]);

    // A second ask goes to the same pane, continuing its conversation.
    view.editor.setSelection({ line: 0, ch: 2 }, { line: 0, ch: 18 });
    ask(false, view.editor, view);
    await until(() => seen.length === 2, "the second ask");
    expect(app.workspace.getLeavesOfType(CHAT_VIEW)).toHaveLength(1);
    expect((JSON.parse(seen[1].body) as { conversation_id: string }).conversation_id).toBe(body.conversation_id);
  });

  it("quotes the selection, cut to the server's 4,000 characters", () => {
    expect(selectionQuestion("  a\n\n\n\nb  ")).toBe('What do my notes say about this passage?\n\n"a\n\nb"');
    const long = selectionQuestion("x".repeat(10_000), "Note");
    expect(long.length).toBeLessThanOrEqual(MAX_QUESTION);
    expect(long.endsWith('x…"')).toBe(true);
  });

  it("falls back to a plain request where the answer cannot stream, in the same pane", async () => {
    routes.set("POST /api/ask", (req, res) => {
      if (req.accept === "text/event-stream") return json(res, 200, { not: "a stream" }); // a buffering proxy
      json(res, 200, answerTo((JSON.parse(req.body) as { question: string }).question));
    });
    await load();
    const view = await openNote("Getting Started/Dates.md");
    view.editor.setSelection({ line: 2, ch: 0 }, { line: 2, ch: 9 });
    command("ask-selection").editorCheckCallback!(false, view.editor, view);
    const pane = () => (app.workspace.getLeavesOfType(CHAT_VIEW)[0]?.view as ChatView | undefined)?.contentEl as unknown as FakeEl | undefined;
    await until(() => !!pane()?.all().some((e) => e.tag === "a"), "the answer");
    expect(seen.map((s) => s.accept)).toEqual(["text/event-stream", "*/*"]);
  });
});

describe("Ask about the current note", () => {
  it("is offered with a note open, and asks about that note alone in the chat pane", async () => {
    routes.set("POST /api/ask", streamAsk);
    await load();
    const ask = command("ask-note").checkCallback!;
    expect(ask(true)).toBe(false); // no note open
    await openNote("Getting Started/Dates.md");
    // The chat pane focused: still the note last active in the main area.
    const side = new WorkspaceLeaf(app);
    app.workspace.setActiveLeaf(side);
    expect(ask(true)).toBe(true);
    ask(false);
    await until(() => seen.length === 1, "the ask");
    const body = JSON.parse(seen[0].body) as Record<string, unknown>;
    expect(body.question).toBe("What are the main points of Dates?");
    expect(body.path).toBe("Getting Started/Dates.md"); // the answer draws on this note only
    expect(noteQuestion(new TFile("A/B c.md") as never)).toEqual({ question: "What are the main points of B c?", options: { path: "A/B c.md" } });
  });
});

describe("Reindex the vault", () => {
  it("posts /api/reindex, shows the job, and a notice with its result when it ends", async () => {
    let polls = 0;
    routes.set("POST /api/reindex", (_req, res) =>
      json(res, 202, { job_id: 7, status: "queued", kind: "reindex", lane: "bulk", links: { job: "/api/jobs/7" }, result: null, error: null }),
    );
    routes.set("GET /api/jobs/7", (_req, res) => {
      polls++;
      const done = polls >= 2;
      json(res, 200, {
        id: 7,
        kind: "reindex",
        status: done ? "succeeded" : "running",
        result: done ? { indexed: 2, unchanged: 15, removed: 1, moved: 0, chunks_embedded: 9, chunks_reused: 0, failed: [], seconds: 1.5 } : null,
        error: null,
      });
    });
    await load();
    await command("reindex").callback!();
    await until(() => Notice.shown.length === 2, "the job's end");
    expect(seen[0]).toMatchObject({ method: "POST", url: "/api/reindex", auth: "Bearer the-key" });
    expect(JSON.parse(seen[0].body)).toEqual({ full: false });
    expect(Notice.shown).toEqual([
      "AI Agent: the server is reindexing its vault: job 7 (queued, bulk lane); a notice follows when it ends.",
      "AI Agent: reindex job 7 done: 2 indexed, 1 removed, 15 unchanged, 9 chunks embedded in 1.5 s.",
    ]);
    expect(seen.slice(1).every((s) => s.method === "GET" && s.url === "/api/jobs/7")).toBe(true);
  });

  it("says that an admin key is needed when the key lacks the scope (403)", async () => {
    routes.set("POST /api/reindex", (_req, res) =>
      json(res, 403, { error: { code: "forbidden", message: "the API key 'k1' lacks the 'admin' scope this route needs; it has: read, write" } }),
    );
    await load();
    await command("reindex").callback!();
    expect(Notice.shown).toHaveLength(1);
    expect(Notice.shown[0]).toMatch(/^AI Agent: reindexing needs an admin key, and this key lacks the admin scope\. Make one on the server/);
    expect(Notice.shown[0]).toContain("lacks the 'admin' scope this route needs; it has: read, write");
  });

  it("says why when the server has no vault (409) or is away", async () => {
    routes.set("POST /api/reindex", (_req, res) => json(res, 409, { error: { code: "no_vault", message: "this server has no vault configured" } }));
    await load();
    await command("reindex").callback!();
    expect(Notice.shown).toEqual(["AI Agent: the reindex did not start: the server answered 409: this server has no vault configured"]);
    plugin.settings.serverUrl = "http://127.0.0.1:9";
    await command("reindex").callback!();
    expect(Notice.shown[1]).toMatch(/^AI Agent: the reindex did not start: cannot reach the server at http:\/\/127\.0\.0\.1:9/);
  });
});

describe("Show sync state per file", () => {
  it("says sync is off when it is, and lists nothing", async () => {
    await load();
    command("sync-state").callback!();
    const modal = Modal.opened[0];
    expect(modal).toBeInstanceOf(SyncStateModal);
    expect(modal.titleEl.text).toBe("AI Agent: sync state per file");
    expect(modal.contentEl.textContent).toMatch(/^Sync is off: nothing is pushed/);
    expect(modal.contentEl.all().filter((e) => e.classes.has("oaa-sync-file"))).toHaveLength(0);
  });

  it("lists every note with its state after a sync: pushed ones synced, queued ones pending, others outside the folders", async () => {
    const puts: string[] = [];
    routes.set("GET /status", (_req, res) => json(res, 200, { version: "t", index: { sources: 0, chunks: 0, vectors: 0, failed: 0, vault: null } }));
    routes.set("GET /api/notes/manifest", (_req, res) => json(res, 200, { "Getting Started/Gone.md": "x" }));
    for (const p of ["Getting%20Started/Recurring%20Tasks.md", "Getting%20Started/Dates.md"]) {
      routes.set(`PUT /api/notes/${p}`, (req, res) => {
        puts.push(decodeURIComponent(req.url));
        json(res, 202, { job_id: 1, status: "queued", kind: "upsert_note", lane: "interactive", result: null, error: null, path: p });
      });
    }
    routes.set("DELETE /api/notes/Getting%20Started/Gone.md", (_req, res) => json(res, 202, { job_id: 2, status: "queued" }));
    await load({ syncEnabled: true, includeFolders: ["Getting Started"] });
    app.workspace.layoutReady();
    await until(() => status.text === "AI sync: synced", "the sync");
    expect(puts.sort()).toEqual(["/api/notes/Getting Started/Dates.md", "/api/notes/Getting Started/Recurring Tasks.md"]);
    expect(seen.some((s) => s.url.includes("Private"))).toBe(false); // outside the synced folders

    // A note renamed and still queued (the push waits 2 s for more events) shows as pending.
    app.vault.files.set("Getting Started/Due.md", app.vault.files.get("Getting Started/Dates.md")!);
    app.vault.files.delete("Getting Started/Dates.md");
    plugin.sync!.renamed("Getting Started/Due.md", "Getting Started/Dates.md");
    command("sync-state").callback!();
    const modal = Modal.opened[0];
    expect(modal).toBeInstanceOf(SyncStateModal);
    const el = (cls: string) => modal.contentEl.all().find((e) => e.classes.has(cls))!;
    expect(el("oaa-sync-summary").text).toBe("AI sync: synced");
    expect(el("oaa-sync-counts").text).toBe("1 synced · 1 pending · 1 outside the synced folders");
    const rows = modal.contentEl.all().filter((e) => e.classes.has("oaa-sync-file")).map((r) => r.children.map((c) => c.text).join(": "));
    expect(rows).toEqual([
      "Getting Started/Due.md: pending move from Getting Started/Dates.md",
      "Getting Started/Recurring Tasks.md: synced",
      "Private/Diary.md: not synced (outside the synced folders)",
    ]);
  });
});

describe("a server that reads this vault itself", () => {
  const statusWith = (vault: string | null): Handler => (_req, res) =>
    json(res, 200, { version: "t", index: { sources: 3, chunks: 9, vectors: 9, failed: 0, vault } });

  it("gets nothing pushed: sync stays off, the status bar and a notice say why, and Test connection says so", async () => {
    app.vault.adapter = new FileSystemAdapter("/home/me/Notes");
    routes.set("GET /status", statusWith("/home/me/Notes/"));
    await load({ syncEnabled: true });
    app.workspace.layoutReady();
    await until(() => status.text !== "", "the sync start");
    expect(status.text).toBe("AI sync: off (the server reads this vault)");
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual(["GET /status"]); // no manifest, no push
    expect(Notice.shown).toEqual([
      `AI Agent: the server at ${url} reads this vault's folder itself (/home/me/Notes/): sync stays off and nothing is pushed. Turn "Sync the vault to the server" off in the settings.`,
    ]);
    app.vault.trigger("create", new TFile("New.md"));
    expect(plugin.sync).toBeNull(); // vault events are not listened to

    command("sync-state").callback!();
    expect(Modal.opened[0].contentEl.textContent).toBe("Sync is off for this server: it reads this vault's folder itself (/home/me/Notes/); nothing is pushed.");
    Notice.shown.length = 0;
    await command("test-connection").callback!();
    expect(Notice.shown).toEqual(["Connected: server t, 3 sources, 9 chunks indexed; it reads this vault's folder itself (/home/me/Notes/): leave sync off"]);
  });

  it("syncs when the server's vault is another folder, or when the key cannot see it, or on mobile", async () => {
    routes.set("GET /api/notes/manifest", (_req, res) => json(res, 200, {}));
    for (const p of ["Getting%20Started/Recurring%20Tasks.md", "Getting%20Started/Dates.md", "Private/Diary.md"]) {
      routes.set(`PUT /api/notes/${p}`, (_req, res) => json(res, 202, { job_id: 1, status: "queued" }));
    }
    for (const [adapter, vault] of [
      [new FileSystemAdapter("/home/me/Notes"), "/srv/vault"],
      [new FileSystemAdapter("/home/me/Notes"), null],
      [{ getName: () => "Notes" }, "/home/me/Notes"], // mobile: no folder to compare
    ] as const) {
      seen.length = 0;
      status.setText("");
      app.vault.adapter = adapter;
      routes.set("GET /status", statusWith(vault));
      await load({ syncEnabled: true });
      app.workspace.layoutReady();
      await until(() => status.text === "AI sync: synced", "the sync");
      expect(seen.filter((s) => s.method === "PUT")).toHaveLength(3);
      expect(seen.some((s) => s.url === "/status")).toBe(adapter instanceof FileSystemAdapter);
      plugin.onunload();
    }
  });

  it("is only the same vault on this machine: a loopback URL and the same folder", async () => {
    const st = (vault: string | null) => ({ version: "t", index: { sources: 0, chunks: 0, vectors: 0, failed: 0, vault } });
    const reads = async (status: ReturnType<typeof st>, url: string, local: string | null) => (await serverVault(status, url, local)).readsThisVault;
    expect(await reads(st("/v"), "http://localhost:8000", "/v/")).toBe(true);
    expect(await reads(st("/v"), "http://[::1]:8000", "/v")).toBe(true);
    expect(await reads(st("C:\\Users\\me\\Notes"), "http://127.0.0.1:8000", "c:/users/me/notes")).toBe(true);
    expect(await reads(st("/v"), "https://notes.example.org", "/v")).toBe(false); // maybe a copy at the same path
    expect(await reads(st("/v"), "http://127.0.0.1:8000", "/w")).toBe(false);
    expect(await serverVault(st(null), "http://127.0.0.1:8000", "/v")).toEqual({ known: false, path: null, readsThisVault: false });
    expect(await serverVault(st("/v"), "http://127.0.0.1:8000", null)).toEqual({ known: true, path: "/v", readsThisVault: false });
  });

  it("is told by the hash of the folder's path to a key that is not shown the folder", async () => {
    // The server's vault_id: SHA-256 of its folder's path spelled with / and no trailing /, lower case after a drive letter.
    const { createHash } = await import("node:crypto");
    const id = (p: string) => createHash("sha256").update(p).digest("hex");
    const st = (vault_id: string) => ({ version: "t", index: { sources: 0, chunks: 0, vectors: 0, failed: 0, vault: null, vault_id } });
    expect(await serverVault(st(id("/home/me/Notes")), "http://127.0.0.1:8000", "/home/me/Notes/")).toEqual({ known: true, path: null, readsThisVault: true });
    expect((await serverVault(st(id("c:/users/me/notes")), "http://localhost:8000", "C:\\Users\\Me\\Notes")).readsThisVault).toBe(true);
    expect((await serverVault(st(id("/home/me/Notes")), "http://127.0.0.1:8000", "/home/me/Other")).readsThisVault).toBe(false);
    expect((await serverVault(st(id("/home/me/Notes")), "https://notes.example.org", "/home/me/Notes")).readsThisVault).toBe(false);
  });
});
