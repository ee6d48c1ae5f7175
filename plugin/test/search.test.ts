import { describe, expect, inject, it } from "vitest";
import { ApiClient } from "../src/api";
import { parseQuery, SearchModal } from "../src/search";
import { App, FakeEl, requests } from "./fake-obsidian";

const server = inject("server");

describe("the search query's filters", () => {
  it("take folder: and tag: tokens out of the words", () => {
    expect(parseQuery("due date")).toEqual({ text: "due date" });
    expect(parseQuery("folder:Getting/Statuses custom status")).toEqual({ text: "custom status", folder: "Getting/Statuses" });
    expect(parseQuery('custom folder:"Getting Started/Statuses/" status')).toEqual({ text: "custom status", folder: "Getting Started/Statuses" });
    expect(parseQuery("tag:#feature/dates due")).toEqual({ text: "due", tag: "feature/dates" });
    expect(parseQuery("TAG:work Folder:/A/ x")).toEqual({ text: "x", tag: "work", folder: "A" });
  });

  it("ignore a filter still being typed, and words that only contain a colon", () => {
    expect(parseQuery("recurring folder:")).toEqual({ text: "recurring" });
    expect(parseQuery("tag:# due")).toEqual({ text: "due" });
    expect(parseQuery("ratio 3:2 subfolder:x")).toEqual({ text: "ratio 3:2 subfolder:x" });
  });
});

describe("the search modal against the real server", () => {
  const client = new ApiClient(() => ({ serverUrl: server.url, apiKey: server.key }));
  const modal = new SearchModal(new App() as never, client, () => "hybrid");

  it("sends folder and tag filters as /api/search's fields, and a folder filter returns only notes under it", async () => {
    requests.length = 0;
    const all = await modal.getSuggestions("custom statuses");
    expect(all.some((r) => !r.path.startsWith("Getting Started/Statuses/"))).toBe(true);

    requests.length = 0;
    const inFolder = await modal.getSuggestions('folder:"Getting Started/Statuses" custom statuses');
    expect(JSON.parse(requests[0].body as string)).toEqual({ query: "custom statuses", k: 20, mode: "hybrid", folder: "Getting Started/Statuses" });
    expect(inFolder.length).toBeGreaterThan(0);
    expect(inFolder.every((r) => r.path.startsWith("Getting Started/Statuses/"))).toBe(true);

    requests.length = 0;
    const tagged = await modal.getSuggestions("tag:#feature/dates due");
    expect(JSON.parse(requests[0].body as string).tag).toBe("feature/dates");
    expect(tagged.map((r) => r.path)).toContain("Getting Started/Dates.md");
  });

  it("sends nothing for filters without words, and renders title, folder and heading path, and snippet", async () => {
    requests.length = 0;
    expect(await modal.getSuggestions("folder:Getting")).toEqual([]);
    expect(requests).toHaveLength(0);
    const el = new FakeEl();
    modal.renderSuggestion(
      { path: "A/B.md", title: "B", heading_path: ["B", "Due"], page: null, kind: "note", snippet: "…due…", score: 1, link: "" },
      el as never,
    );
    expect(el.children.map((c) => c.text)).toEqual(["B", "A · B › Due", "…due…"]);
  });
});
