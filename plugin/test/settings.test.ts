import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { createServer } from "node:https";
import { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, inject, it, vi } from "vitest";
import { ApiClient } from "../src/api";
import { AiAgentSettingTab, DEFAULT_SETTINGS, isExcluded, loadSettings, testConnection, type AiAgentSettings } from "../src/settings";
import { App, Notice, Setting } from "./fake-obsidian";

const server = inject("server");

describe("Test connection", () => {
  it("reports the server's version and index counts for a good key", async () => {
    const r = await testConnection(new ApiClient(() => ({ serverUrl: server.url, apiKey: server.key })));
    expect(r.ok).toBe(true);
    // This admin key sees the server's vault folder, which is named after the counts and the key.
    expect(r.message).toMatch(/^Connected: server \S+, \d+ sources, \d+ chunks indexed; key '[^']+': admin \(everything\); its vault: \/\S+$/);
  });

  it("names the key's scopes and what a missing one keeps from working", async () => {
    const admin = new ApiClient(() => ({ serverUrl: server.url, apiKey: server.key }));
    const cases: [string[], string][] = [
      [["read", "write"], "key 'scoped-read-write': read, write;?"],
      [["read"], "key 'scoped-read': read \\(without write: no sync\\)"],
      [["write"], "key 'scoped-write': write \\(without read: no chat or search\\)"],
    ];
    for (const [scopes, said] of cases) {
      const made = await admin.request<{ key: string }>("POST", "/api/keys", { name: `scoped-${scopes.join("-")}`, scopes });
      const r = await testConnection(new ApiClient(() => ({ serverUrl: server.url, apiKey: made.key })));
      expect(r.ok, r.message).toBe(scopes.includes("read"));
      if (r.ok) expect(r.message).toMatch(new RegExp(`chunks indexed; ${said}`));
      else expect(r.message).toMatch(/^Connection failed \(403 forbidden\)/); // /status needs read
    }
  });

  it("reports a 401 for a bad key", async () => {
    const r = await testConnection(new ApiClient(() => ({ serverUrl: server.url, apiKey: "bad" })));
    expect(r.ok).toBe(false);
    expect(r.message).toMatch(/401 unauthorized/);
  });

  it("is a button of the settings tab that shows the result as a notice", async () => {
    const settings: AiAgentSettings = { ...DEFAULT_SETTINGS, serverUrl: server.url, apiKey: "bad" };
    const host = {
      settings,
      client: new ApiClient(() => settings),
      saved: 0,
      async saveSettings() {
        host.saved++;
      },
    };
    Setting.all.length = 0;
    new AiAgentSettingTab(new App() as never, host as never).display();
    const key = Setting.all.find((s) => s.name === "API key")!.controls[0];
    expect(key.inputEl.type).toBe("password");
    key.change(` ${server.key} `);
    expect(settings.apiKey).toBe(server.key);
    expect(host.saved).toBe(1);
    Notice.shown.length = 0;
    await Setting.all.find((s) => s.name === "Test connection")!.controls[0].click();
    expect(Notice.shown[0]).toMatch(/^Connected/);
  });
});

describe("Test connection over TLS and CORS", () => {
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it("says TLS, not unreachable, when the server's certificate is not trusted", async () => {
    const dir = mkdtempSync(join(tmpdir(), "oaa-tls-"));
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
      "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")], { stdio: "ignore" });
    const https = createServer({ key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) }, (_req, res) => res.end("{}"));
    await new Promise<void>((resolve) => https.listen(0, "127.0.0.1", resolve));
    try {
      const url = `https://127.0.0.1:${(https.address() as AddressInfo).port}`;
      const r = await testConnection(new ApiClient(() => ({ serverUrl: url, apiKey: server.key })));
      expect(r.ok).toBe(false);
      expect(r.message).toMatch(/^Connection failed \(TLS\): the TLS connection to https:\/\/127\.0\.0\.1:\d+\/status failed \(.*self-signed certificate.*\): this device does not trust/);
    } finally {
      https.close();
    }
    // A server that is not there at all is still "unreachable".
    const dead = await testConnection(new ApiClient(() => ({ serverUrl: "http://127.0.0.1:9", apiKey: server.key })));
    expect(dead.message).toMatch(/^Connection failed \(unreachable\): cannot reach the server at http:\/\/127\.0\.0\.1:9\/status \(TypeError: fetch failed: .+\); is it running/);
  });

  it("warns that CORS refuses this app's origin when fetch fails where requestUrl works", async () => {
    // A browser's fetch refuses a response without this origin in its CORS headers with a bare TypeError
    // (requestUrl, Obsidian's own, is not subject to CORS and still works).
    vi.stubGlobal("fetch", () => Promise.reject(new TypeError("Failed to fetch")));
    const r = await testConnection(new ApiClient(() => ({ serverUrl: server.url, apiKey: server.key })));
    expect(r.ok).toBe(true);
    expect(r.message).toMatch(/chunks indexed; .*\. Warning: CORS refuses this app's origin \(TypeError: Failed to fetch\), so answers arrive whole instead of streaming: add the origin \(app:\/\/obsidian\.md on desktop; .*\) to the server's `server\.cors_origins`$/);
    vi.unstubAllGlobals();
    const fine = await testConnection(new ApiClient(() => ({ serverUrl: server.url, apiKey: server.key })));
    expect(fine.message).not.toMatch(/CORS/);
  });
});

describe("Test connection and the server's vault", () => {
  const admin = new ApiClient(() => ({ serverUrl: server.url, apiKey: server.key }));

  it("says that the server reads this vault's folder itself, where the key sees the server's vault", async () => {
    const r = await testConnection(admin, server.vault);
    expect(r.message).toMatch(/^Connected: server \S+, \d+ sources, \d+ chunks indexed; key '[^']+': admin \(everything\); it reads this vault's folder itself \((.+)\): leave sync off$/);
    const other = await testConnection(admin, "/somewhere/else");
    expect(other.message).toMatch(/; its vault: \/.+$/);
  });

  it("says it for a key that does not see the server's vault folder (read and write keys), by the folder's hash", async () => {
    const made = await admin.request<{ key: string }>("POST", "/api/keys", { name: "plugin-settings-test", scopes: ["read", "write"] });
    const client = new ApiClient(() => ({ serverUrl: server.url, apiKey: made.key }));
    const r = await testConnection(client, server.vault + "/");
    expect(r.message).toMatch(/^Connected: server \S+, \d+ sources, \d+ chunks indexed; key 'plugin-settings-test': read, write; it reads this vault's folder itself: leave sync off$/);
    expect(r.message).not.toContain(server.vault); // the folder is not shown to this key
    const other = await testConnection(client, "/somewhere/else");
    expect(other.message).toMatch(/^Connected: server \S+, \d+ sources, \d+ chunks indexed; key 'plugin-settings-test': read, write$/);
  });
});

describe("synced folders", () => {
  it("exclude a folder and what is under it only", () => {
    const s = { ...DEFAULT_SETTINGS, excludeFolders: ["Private/"] };
    expect(isExcluded(s, "Private/a.md")).toBe(true);
    expect(isExcluded(s, "Privateer.md")).toBe(false);
  });

  it("include, when any is set, only their notes, less the excluded folders within them", () => {
    const s = { ...DEFAULT_SETTINGS, includeFolders: ["Work", "/Projects/Active/", " "], excludeFolders: ["Work/Secret"] };
    expect(isExcluded(s, "Work/a.md")).toBe(false);
    expect(isExcluded(s, "Projects/Active/b.md")).toBe(false);
    expect(isExcluded(s, "Projects/Old/c.md")).toBe(true);
    expect(isExcluded(s, "Workshop/d.md")).toBe(true);
    expect(isExcluded(s, "Top.md")).toBe(true);
    expect(isExcluded(s, "Work/Secret/e.md")).toBe(true);
    // Blank lines only: the whole vault.
    expect(isExcluded({ ...DEFAULT_SETTINGS, includeFolders: ["", "/"] }, "Top.md")).toBe(false);
    expect(isExcluded(DEFAULT_SETTINGS, "Top.md")).toBe(false);
  });

  it("load from settings saved before there were included folders (none: the whole vault)", () => {
    const old = { serverUrl: "https://notes.example.org", apiKey: "", searchMode: "keyword", syncEnabled: true, excludeFolders: ["Private"] };
    const s = loadSettings(old);
    expect(s).toEqual({ ...DEFAULT_SETTINGS, ...old, includeFolders: [] });
    expect(loadSettings(undefined)).toEqual(DEFAULT_SETTINGS);
    expect(loadSettings({ includeFolders: "Work", excludeFolders: [3, " A "] })).toMatchObject({ includeFolders: [], excludeFolders: ["A"] });
    s.includeFolders.push("X");
    expect(DEFAULT_SETTINGS.includeFolders).toEqual([]); // not shared with the defaults
  });

  it("are two text areas of the settings tab, one folder a line", () => {
    const settings: AiAgentSettings = { ...DEFAULT_SETTINGS, includeFolders: ["Work"], excludeFolders: [] };
    const host = { settings, client: new ApiClient(() => settings), saved: 0, async saveSettings() { host.saved++; } };
    Setting.all.length = 0;
    new AiAgentSettingTab(new App() as never, host as never).display();
    const synced = Setting.all.find((s) => s.name === "Folders synced")!;
    expect(synced.desc).toMatch(/empty: the whole vault/);
    expect(synced.controls[0].value).toBe("Work");
    synced.controls[0].change("Work\n\n Projects/Active \n");
    expect(settings.includeFolders).toEqual(["Work", "Projects/Active"]);
    Setting.all.find((s) => s.name === "Folders never synced")!.controls[0].change("Work/Secret");
    expect(settings.excludeFolders).toEqual(["Work/Secret"]);
    expect(host.saved).toBe(2);
    expect(Setting.all.find((s) => s.name === "Sync the vault to the server")!.desc).toMatch(/Leave it off when the server runs on this machine and reads this vault's folder itself/);
  });
});
