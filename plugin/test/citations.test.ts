import { describe, expect, it } from "vitest";
import type { Answer } from "../src/api";
import { ChatView } from "../src/chat";
import { citationTarget } from "../src/citations";
import { citation } from "./citation-fixture";
import { App, FakeEl, WorkspaceLeaf } from "./fake-obsidian";

const cite = citation;

describe("citation links", () => {
  it("open the note at its innermost cited heading", () => {
    expect(citationTarget(cite({}))).toBe("Getting Started/Dates.md#Due");
  });

  it("open a note without headings at its top", () => {
    expect(citationTarget(cite({ heading_path: [] }))).toBe("Getting Started/Dates.md");
  });

  it("open a PDF at its page", () => {
    expect(citationTarget(cite({ path: "Papers/x.pdf", kind: "pdf", page: 4, heading_path: [] }))).toBe("Papers/x.pdf#page=4");
  });

  it("are rendered under the answer and clicking one opens the note at the heading", async () => {
    const app = new App();
    const view = new ChatView(new WorkspaceLeaf(app) as never, null as never);
    const out = new FakeEl();
    const answer = { text: "Use a due date [1].", declined: false, notice: null, citations: [cite({})], sources: [cite({})] } as unknown as Answer;
    await view.renderAnswer(out as never, out.createDiv() as never, answer);
    const link = out.all().find((e) => e.tag === "a")!;
    expect(link.text).toBe("[1] Dates — Dates › Due");
    link.onclick!({ preventDefault() {} });
    expect(app.workspace.opened).toEqual([{ linktext: "Getting Started/Dates.md#Due", sourcePath: "", newLeaf: undefined }]);
  });
});
