/** The chat pane (with its answer's actions) and the search modal rendered in headless Chromium: the harness page (test/harness/)
 * bundled with esbuild, served with the plugin's styles.css from a local server that proxies everything
 * else to the real server (so the page's fetch is same-origin, as requestUrl is in Obsidian), and driven
 * by Playwright for Python from ../.venv. The screenshots are decoded and checked to be drawn. */

import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { inflateSync } from "node:zlib";
import esbuild from "esbuild";
import { afterAll, describe, expect, inject, it } from "vitest";

const server = inject("server");
const ROOT = resolve(import.meta.dirname, "..");
const HARNESS = join(ROOT, "test", "harness");
const PYTHON = resolve(ROOT, "..", ".venv", "bin", "python");
const CHROMIUM = process.env.OAA_CHROMIUM ?? "/usr/bin/chromium";
const PACE_MS = 8;
const hasBrowser = existsSync(PYTHON) && existsSync(CHROMIUM);

/** The pixels of an 8-bit RGB/RGBA PNG (what Chromium writes), unfiltered. */
export function decodePng(png: Buffer): { width: number; height: number; channels: number; pixels: Buffer } {
  if (png.subarray(0, 8).toString("hex") !== "89504e470d0a1a0a") throw new Error("not a PNG");
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  for (let at = 8; at < png.length; ) {
    const length = png.readUInt32BE(at);
    const type = png.toString("latin1", at + 4, at + 8);
    const data = png.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      if (data[8] !== 8 || data[12] !== 0) throw new Error("only 8-bit, non-interlaced PNGs");
      channels = { 2: 3, 6: 4 }[data[9]] ?? 0;
      if (!channels) throw new Error(`colour type ${data[9]} is not RGB(A)`);
    } else if (type === "IDAT") idat.push(data);
    at += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const pixels = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? pixels[y * stride + x - channels] : 0;
      const b = y > 0 ? pixels[(y - 1) * stride + x] : 0;
      const c = x >= channels && y > 0 ? pixels[(y - 1) * stride + x - channels] : 0;
      const p = a + b - c;
      const pa = Math.abs(p - a);
      const pb = Math.abs(p - b);
      const pc = Math.abs(p - c);
      const predictor = [0, a, b, (a + b) >> 1, pa <= pb && pa <= pc ? a : pb <= pc ? b : c][filter];
      pixels[y * stride + x] = (line[x] + predictor) & 0xff;
    }
  }
  return { width, height, channels, pixels };
}

/** How many colours, and the share of pixels not of the commonest one (the background). */
function drawn(png: Buffer): { width: number; height: number; colours: number; inked: number } {
  const { width, height, channels, pixels } = decodePng(png);
  const counts = new Map<number, number>();
  for (let i = 0; i < pixels.length; i += channels) {
    const rgb = (pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2];
    counts.set(rgb, (counts.get(rgb) ?? 0) + 1);
  }
  const commonest = Math.max(...counts.values());
  return { width, height, colours: counts.size, inked: 1 - commonest / (width * height) };
}

async function servePage(): Promise<{ url: string; close: () => Promise<void> }> {
  const bundle = await esbuild.build({
    entryPoints: [join(HARNESS, "harness.ts")],
    bundle: true,
    write: false,
    format: "iife",
    platform: "browser",
    target: "es2021",
    alias: { obsidian: join(HARNESS, "obsidian-dom.ts") },
    logLevel: "silent",
  });
  const files: Record<string, [string, string | Uint8Array]> = {
    "/": ["text/html; charset=utf-8", readFileSync(join(HARNESS, "index.html"), "utf8")],
    "/harness.js": ["text/javascript; charset=utf-8", bundle.outputFiles[0].contents],
    "/styles.css": ["text/css; charset=utf-8", readFileSync(join(ROOT, "styles.css"), "utf8")],
  };
  const target = new URL(server.url);
  const http: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const file = files[path];
    if (file && req.method === "GET") {
      res.writeHead(200, { "Content-Type": file[0] });
      res.end(file[1]);
      return;
    }
    // Everything else is the API: passed through as it streams.
    const upstream = request(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: { ...req.headers, host: target.host } },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (!String(answer.headers["content-type"]).startsWith("text/event-stream")) return void answer.pipe(res);
        // The test server answers extractively, all at once: its events are let through one every
        // PACE_MS, as a language model would write them, so that the pane is seen painting the answer as
        // it streams.
        let buffered = "";
        let queue = Promise.resolve();
        const paced = (text: string): void => {
          buffered += text;
          const events = buffered.split("\n\n");
          buffered = events.pop() ?? "";
          for (const e of events) queue = queue.then(() => new Promise((ok) => setTimeout(() => ok(void res.write(`${e}\n\n`)), PACE_MS)));
        };
        answer.setEncoding("utf8");
        answer.on("data", paced);
        answer.on("end", () => void queue.then(() => res.end(buffered)));
      },
    );
    upstream.on("error", (e) => {
      res.writeHead(502);
      res.end(String(e));
    });
    req.pipe(upstream);
  });
  await new Promise<void>((ok) => http.listen(0, "127.0.0.1", ok));
  const address = http.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/?key=${encodeURIComponent(server.key)}`,
    close: () => new Promise<void>((ok) => http.close(() => ok())),
  };
}

describe.skipIf(!hasBrowser)(`the views in headless Chromium (${CHROMIUM})`, () => {
  const out = mkdtempSync(join(tmpdir(), "oaa-plugin-views-"));
  afterAll(() => {
    if (!process.env.OAA_KEEP_SCREENSHOTS) rmSync(out, { recursive: true, force: true });
    else console.warn(`screenshots kept in ${out}`);
  });

  it("streams an answer with sources into the chat pane and lists search results in the modal", async () => {
    const page = await servePage();
    let seen: {
      answer_lengths_while_streaming: number[];
      answer: string;
      citations: string[];
      actions: string[];
      inserted: string;
      opened_all: { linktext: string; newLeaf: unknown }[];
      opened_from_chat: string[];
      results: string[][];
      opened_from_search: { linktext: string; newLeaf: unknown };
      page_errors: string[];
    };
    try {
      const stdout = await new Promise<string>((ok, fail) =>
        execFile(PYTHON, [join(HARNESS, "screenshots.py"), page.url, out, CHROMIUM], { timeout: 90_000 }, (e, so, se) =>
          e ? fail(new Error(`${e.message}\n${se}`)) : ok(so),
        ),
      );
      seen = JSON.parse(stdout.trim().split("\n").pop()!);
    } finally {
      await page.close();
    }
    expect(seen.page_errors).toEqual([]);
    // Streamed: the pane showed the answer growing before it was rendered with its sources.
    expect(seen.answer_lengths_while_streaming.length).toBeGreaterThan(2);
    expect(seen.answer.length).toBeGreaterThan(20);
    expect(seen.citations.length).toBeGreaterThan(0);
    expect(seen.opened_from_chat[0]).toMatch(/\.md(#.+)?$/);
    // The answer's actions: inserted at the cursor of the note with its sources as links, and every
    // source opened in a tab of its own.
    expect(seen.actions).toEqual(["Copy", "Insert at cursor", "Open all sources"]);
    expect(seen.inserted.split("\n\nSources:")[0].length).toBeGreaterThan(20);
    expect(seen.inserted).toMatch(/\n\nSources:\n- \\\[\d+\\\] \[\[[^\]]+\]\]/);
    expect(seen.opened_all.length).toBeGreaterThan(0);
    expect(seen.opened_all.every((o) => o.newLeaf === "tab" && /\.md(#.+)?$/.test(o.linktext))).toBe(true);
    // The folder filter held, and Ctrl+Enter opened the second result in a new pane.
    expect(seen.results.length).toBeGreaterThan(1);
    expect(seen.results.every((r) => r[1].startsWith("Getting Started"))).toBe(true);
    expect(seen.opened_from_search.newLeaf).toBe(true);

    for (const name of ["chat.png", "search.png"]) {
      const d = drawn(readFileSync(join(out, name)));
      expect(d.width).toBe(1280);
      expect(d.height).toBe(800);
      expect(d.colours, name).toBeGreaterThan(200); // text is anti-aliased: a drawn page has hundreds
      expect(d.inked, name).toBeGreaterThan(0.1);
    }
  });
});
