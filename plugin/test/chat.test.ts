/** The chat pane's answer actions: Copy, Insert at cursor (into the note editor, its citations as links
 * that open the notes) and Open all sources (each cited note at its heading, in a tab of its own). */

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Answer, Citation } from "../src/api";
import { ChatView } from "../src/chat";
import { citation } from "./citation-fixture";
import { App, FakeEl, MarkdownView, Notice, TFile, WorkspaceLeaf } from "./fake-obsidian";

const cite = (n: number, over: Partial<Citation> = {}): Citation => citation({ n, ...over });

const ANSWER = {
  text: "Add a due date with 📅 [1]; a recurring task repeats [2], and a paper explains it [3].",
  declined: false,
  notice: null,
  citations: [
    cite(1),
    cite(2, { path: "Getting Started/Recurring Tasks.md", title: "Recurring Tasks", heading_path: ["Recurring Tasks"] }),
    cite(3, { path: "Papers/Recurrence.pdf", title: "Recurrence", heading_path: [], kind: "pdf", page: 4 }),
    cite(1), // the same source again (a second chunk of it): opened once
  ],
  sources: [],
} as unknown as Answer;

const NOTES = {
  "Getting Started/Dates.md": "# Dates\n\n## Due\n\nDue dates.\n",
  "Getting Started/Recurring Tasks.md": "# Recurring Tasks\n\nEvery week.\n",
  "Papers/Recurrence.pdf": "%PDF",
  "Inbox/Draft.md": "# Draft\n\nWhat I know about due dates:\n",
};

let app: App;
let chat: ChatView;
let chatLeaf: WorkspaceLeaf;

async function rendered(answer: Answer): Promise<FakeEl> {
  const out = new FakeEl();
  await chat.renderAnswer(out as never, out.createDiv() as never, answer);
  return out;
}

/** The clicks' promises (a button's handler does not return them) have run. */
const settled = () => new Promise((resolve) => setTimeout(resolve, 0));

function button(out: FakeEl, text: string): FakeEl | undefined {
  return out.all().find((e) => e.tag === "button" && e.text === text);
}

/** The Draft note open in the main area; then the chat pane clicked (it becomes the active leaf). */
async function draftOpen(): Promise<MarkdownView> {
  const leaf = app.workspace.getLeaf();
  await leaf.openFile(new TFile("Inbox/Draft.md"));
  app.workspace.setActiveLeaf(leaf);
  app.workspace.setActiveLeaf(chatLeaf);
  return leaf.view as MarkdownView;
}

afterEach(() => {
  vi.unstubAllGlobals();
});

beforeEach(() => {
  app = new App();
  for (const [p, t] of Object.entries(NOTES)) app.vault.files.set(p, t);
  chatLeaf = new WorkspaceLeaf(app);
  chat = new ChatView(chatLeaf as never, null as never);
  chatLeaf.view = chat;
  Notice.shown.length = 0;
});

describe("the chat pane's answer actions", () => {
  it("are Copy, Insert at cursor and Open all sources", async () => {
    const out = await rendered(ANSWER);
    const actions = out.all().find((e) => e.classes.has("oaa-actions"))!;
    expect(actions.children.map((b) => b.text)).toEqual(["Copy", "Insert at cursor", "Open all sources"]);
  });

  it("insert the answer's Markdown at the cursor of the note last edited, its sources as links to the notes", async () => {
    const draft = await draftOpen();
    const before = draft.editor.getValue();
    const out = await rendered(ANSWER);
    button(out, "Insert at cursor")!.onclick!({});
    expect(draft.editor.getValue()).toBe(
      before +
        [
          ANSWER.text,
          "",
          "Sources:",
          "- \\[1\\] [[Dates#Due|Dates — Dates › Due]]",
          "- \\[2\\] [[Recurring Tasks#Recurring Tasks|Recurring Tasks — Recurring Tasks]]",
          "- \\[3\\] [[Recurrence.pdf#page=4|Recurrence — p. 4]]",
          "- \\[1\\] [[Dates#Due|Dates — Dates › Due]]",
          "",
        ].join("\n"),
    );
    // Every link names a file of the vault (Obsidian resolves a unique name to its path).
    const links = [...draft.editor.getValue().matchAll(/\[\[([^\]|#]+)(#[^\]|]*)?\|/g)].map((m) => m[1]);
    const names = [...app.vault.files.keys()].map((p) => p.slice(p.lastIndexOf("/") + 1).replace(/\.md$/, ""));
    expect(links.every((l) => names.includes(l))).toBe(true);
    // The cursor is after the answer: a second insert follows it.
    expect(draft.editor.getCursor()).toEqual(draft.editor.offsetToPos(draft.editor.getValue().length));
    expect(Notice.shown).toEqual(["AI Agent: the answer was inserted into Draft."]);
  });

  it("insert into the active note editor, replacing its selection, on a paragraph of its own mid-line", async () => {
    const leaf = app.workspace.getLeaf();
    await leaf.openFile(new TFile("Inbox/Draft.md"));
    app.workspace.setActiveLeaf(leaf);
    const editor = (leaf.view as MarkdownView).editor;
    editor.setSelection({ line: 2, ch: 18 }, { line: 2, ch: 27 }); // "due dates"
    expect(editor.getSelection()).toBe("due dates");
    const answer = { ...ANSWER, text: "Use 📅.", citations: [cite(1)] };
    expect(chat.insertAtCursor(answer)).toBe(true);
    expect(editor.getValue()).toBe("# Draft\n\nWhat I know about \n\nUse 📅.\n\nSources:\n- \\[1\\] [[Dates#Due|Dates — Dates › Due]]\n:\n");
  });

  it("say with a notice that a note must be open when no note editor is, and change nothing", async () => {
    app.workspace.setActiveLeaf(chatLeaf);
    const out = await rendered(ANSWER);
    button(out, "Insert at cursor")!.onclick!({});
    expect(Notice.shown).toHaveLength(1);
    expect(Notice.shown[0]).toMatch(/open a note to insert the answer into/);
    expect(chat.insertAtCursor(ANSWER)).toBe(false);
  });

  it("open every cited note at its heading and the PDF at its page, each in its own tab, once each", async () => {
    const out = await rendered(ANSWER);
    button(out, "Open all sources")!.onclick!({});
    await settled();
    expect(app.workspace.opened).toEqual([
      { linktext: "Getting Started/Dates.md#Due", sourcePath: "", newLeaf: "tab" },
      { linktext: "Getting Started/Recurring Tasks.md#Recurring Tasks", sourcePath: "", newLeaf: "tab" },
      { linktext: "Papers/Recurrence.pdf#page=4", sourcePath: "", newLeaf: "tab" },
    ]);
    // The same targets as the citation links under the answer.
    app.workspace.opened.length = 0;
    for (const a of out.all().filter((e) => e.tag === "a")) a.onclick!({ preventDefault() {} });
    await settled();
    expect(new Set(app.workspace.opened.map((o) => o.linktext))).toEqual(new Set(["Getting Started/Dates.md#Due", "Getting Started/Recurring Tasks.md#Recurring Tasks", "Papers/Recurrence.pdf#page=4"]));
  });

  it("use a declined answer's closest notes, and offer no Open all sources without any", async () => {
    const declined = { ...ANSWER, text: "No note answers this.", declined: true, citations: [], sources: [cite(1)] } as unknown as Answer;
    const draft = await draftOpen();
    const out = await rendered(declined);
    expect(chat.insertAtCursor(declined)).toBe(true);
    expect(draft.editor.getValue()).toContain("No note answers this.\n\nClosest notes:\n- \\[1\\] [[Dates#Due|");
    await chat.openAllSources(declined);
    expect(app.workspace.opened.map((o) => o.linktext)).toEqual(["Getting Started/Dates.md#Due"]);
    expect(button(out, "Open all sources")).toBeDefined();

    const bare = await rendered({ ...declined, declined: false, sources: [] });
    expect(button(bare, "Open all sources")).toBeUndefined();
    expect(button(bare, "Insert at cursor")).toBeDefined();
  });

  it("link a note this vault lacks by its path, a heading without link syntax, and a web page by its URL", async () => {
    const elsewhere = cite(1, { path: "Elsewhere/Gone.md", title: "Gone", heading_path: ["Gone", "Step 1: [draft] | v2"] });
    const web = cite(2, { path: "https://example.org/tasks", title: "Tasks on the web", heading_path: [], kind: "web" });
    const answer = { ...ANSWER, text: "Two sources [1] [2].", citations: [elsewhere, web] };
    const draft = await draftOpen();
    chat.insertAtCursor(answer);
    expect(draft.editor.getValue()).toContain(
      "- \\[1\\] [[Elsewhere/Gone#Step 1 draft v2|Gone — Gone › Step 1: draft v2]]\n- \\[2\\] [Tasks on the web](<https://example.org/tasks>)\n",
    );
    const opened: string[] = [];
    vi.stubGlobal("window", { open: (url: string) => opened.push(url) });
    await chat.openAllSources(answer);
    expect(opened).toEqual(["https://example.org/tasks"]); // the page in the browser, not a new note named after it
    expect(app.workspace.opened.map((o) => o.linktext)).toEqual(["Elsewhere/Gone.md#Step 1: [draft] | v2"]);
  });
});
