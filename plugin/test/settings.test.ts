import { describe, expect, inject, it } from "vitest";
import { ApiClient } from "../src/api";
import { AiAgentSettingTab, DEFAULT_SETTINGS, isExcluded, testConnection, type AiAgentSettings } from "../src/settings";
import { App, Notice, Setting } from "./fake-obsidian";

const server = inject("server");

describe("Test connection", () => {
  it("reports the server's version and index counts for a good key", async () => {
    const r = await testConnection(new ApiClient(() => ({ serverUrl: server.url, apiKey: server.key })));
    expect(r.ok).toBe(true);
    expect(r.message).toMatch(/^Connected: server \S+, \d+ sources, \d+ chunks indexed$/);
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

describe("excluded folders", () => {
  it("cover the folder and what is under it only", () => {
    const s = { ...DEFAULT_SETTINGS, excludeFolders: ["Private/"] };
    expect(isExcluded(s, "Private/a.md")).toBe(true);
    expect(isExcluded(s, "Privateer.md")).toBe(false);
  });
});
