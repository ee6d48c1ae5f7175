import { afterEach, describe, expect, inject, it, vi } from "vitest";
import { ApiClient, ApiError, type AskEvent } from "../src/api";
import { SseParser } from "../src/sse";
import { requests } from "./fake-obsidian";

const server = inject("server");
const client = (apiKey = server.key) => new ApiClient(() => ({ serverUrl: server.url + "/", apiKey }));

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("the API client against the real server", () => {
  it("sends the key as a bearer token and parses search results", async () => {
    requests.length = 0;
    const results = await client().search("how do I add a due date", { k: 3 });
    expect(requests[0].headers?.Authorization).toBe(`Bearer ${server.key}`);
    expect(requests[0].url).toBe(`${server.url}/api/search`);
    expect(results).toHaveLength(3);
    expect(results[0].path).toMatch(/\.md$/);
    expect(results[0].link).toMatch(/^obsidian:\/\//);
    expect(Array.isArray(results[0].heading_path)).toBe(true);
  });

  it("turns a refused key into a 401 that says to check the key", async () => {
    const refused = await client("not-a-key").search("due date").catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ApiError);
    expect((refused as ApiError).status).toBe(401);
    expect((refused as ApiError).message).toMatch(/check it in the plugin's settings/);
  });

  it("parses a JSON answer with citations", async () => {
    const answer = await client().ask("How do I make a task repeat every week?");
    expect(answer.text.length).toBeGreaterThan(0);
    expect(answer.citations.length).toBeGreaterThan(0);
    expect(answer.citations[0].path).toMatch(/\.md$/);
  });

  it("streams an answer as retrieval, token and answer events", async () => {
    const events: AskEvent[] = [];
    const answer = await client().askStream("How do I make a task repeat every week?", {}, (e) => events.push(e));
    const names = events.map((e) => e.type);
    expect(names[0]).toBe("retrieval");
    expect(names).toContain("token");
    expect(names[names.length - 1]).toBe("answer");
    expect(answer.citations.length).toBeGreaterThan(0);
    const tokens = events.flatMap((e) => (e.type === "token" ? [e.text] : [])).join("");
    expect(tokens.length).toBeGreaterThan(0);
  });

  it("falls back to a plain request where streaming fails, without losing the answer", async () => {
    vi.stubGlobal("fetch", () => Promise.reject(new TypeError("streaming is not available")));
    const events: AskEvent[] = [];
    const answer = await client().askStream("How do I make a task repeat every week?", {}, (e) => events.push(e));
    expect(events.map((e) => e.type)).toEqual(["answer"]);
    expect(answer.citations.length).toBeGreaterThan(0);
  });

  it("says the server is unreachable when nothing listens", async () => {
    const dead = new ApiClient(() => ({ serverUrl: "http://127.0.0.1:9", apiKey: "k" }));
    const e = (await dead.status().catch((x: unknown) => x)) as ApiError;
    expect(e.status).toBe(0);
    expect(e.message).toMatch(/cannot reach the server/);
  });
});

describe("the SSE parser", () => {
  it("joins events split across chunks and lines", () => {
    const p = new SseParser();
    expect(p.push("event: token\r\ndata: {\"te")).toEqual([]);
    expect(p.push("xt\": \"a\"}\r\n\r\n: keep-alive\n\nevent: answer\ndata: 1\n")).toEqual([
      { event: "token", data: '{"text": "a"}' },
    ]);
    expect(p.end()).toEqual([{ event: "answer", data: "1" }]);
  });
});
