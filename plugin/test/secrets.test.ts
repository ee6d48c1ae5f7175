import { describe, expect, it, vi } from "vitest";
import AiAgentPlugin from "../src/main";
import { SECRET_ID, loadApiKey } from "../src/secrets";
import { AiAgentSettingTab } from "../src/settings";
import { App, Notice, Setting } from "./fake-obsidian";

type Data = { settings: Record<string, unknown>; sync: unknown } | null;

/** A plugin started over `data` (data.json as Obsidian keeps it) in `app`. */
async function start(app: App, data: Data): Promise<AiAgentPlugin & { data: Data }> {
  const plugin = new AiAgentPlugin(app as never, {} as never) as AiAgentPlugin & { data: Data };
  plugin.data = data;
  await plugin.onload();
  return plugin;
}

function settingsTab(app: App, plugin: AiAgentPlugin) {
  Setting.all.length = 0;
  const tab = new AiAgentSettingTab(app as never, plugin);
  tab.display();
  const el = (tab as unknown as { containerEl: import("./fake-obsidian").FakeEl }).containerEl;
  return {
    key: Setting.all.find((s) => s.name === "API key")!,
    warning: el.all().find((e) => e.classes.has("oaa-warning")),
  };
}

describe("the API key", () => {
  it("is kept in Obsidian's secret storage where the app has it, never in data.json", async () => {
    const app = new App();
    const plugin = await start(app, { settings: { serverUrl: "http://127.0.0.1:1" }, sync: { pending: {} } });
    expect(plugin.keyStorage).toBe("secret-storage");
    const tab = settingsTab(app, plugin);
    expect(tab.warning).toBeUndefined();
    expect(tab.key.desc).toMatch(/secret storage/);
    tab.key.controls[0].change(" oaa_secret ");
    await Promise.resolve();
    expect(app.secretStorage!.getSecret(SECRET_ID)).toBe("oaa_secret");
    expect(plugin.data!.settings.apiKey).toBe("");
    expect(JSON.stringify(plugin.data)).not.toContain("oaa_secret");

    // A restart reads it back from the secret storage; saving the sync queue does not rewrite it.
    const again = await start(app, plugin.data);
    expect(again.settings.apiKey).toBe("oaa_secret");
    app.secretStorage!.secrets.set(SECRET_ID, "changed elsewhere");
    await again.saveSettings();
    expect(app.secretStorage!.getSecret(SECRET_ID)).toBe("changed elsewhere");
  });

  it("stays in data.json where the app has no secret storage, and the settings tab warns that sync services copy it", async () => {
    const app = new App({ secretStorage: false });
    const plugin = await start(app, { settings: { apiKey: "oaa_old" }, sync: { pending: {} } });
    expect(plugin.keyStorage).toBe("data.json");
    expect(plugin.settings.apiKey).toBe("oaa_old");
    const tab = settingsTab(app, plugin);
    expect(tab.warning!.text).toMatch(/stored in the plugin's settings file, \.obsidian\/plugins\/obsidian-ai-agent\/data\.json, which sync services/);
    expect(tab.key.desc).not.toMatch(/secret storage on this device/);
    tab.key.controls[0].change("oaa_new");
    await Promise.resolve();
    expect(plugin.data!.settings.apiKey).toBe("oaa_new");
  });

  it("moves from data.json into the secret storage once the app has one, and data.json loses it", async () => {
    const old = await start(new App({ secretStorage: false }), { settings: { apiKey: "oaa_moved" }, sync: { pending: {} } });
    await old.saveSettings();
    expect(old.data!.settings.apiKey).toBe("oaa_moved");

    const app = new App(); // Obsidian updated to a version with secret storage
    Notice.shown.length = 0;
    const updated = await start(app, old.data);
    expect(updated.keyStorage).toBe("secret-storage");
    expect(updated.settings.apiKey).toBe("oaa_moved");
    expect(app.secretStorage!.getSecret(SECRET_ID)).toBe("oaa_moved");
    expect(updated.data!.settings.apiKey).toBe("");
    expect(updated.data!.sync).toEqual({ pending: {} });
    expect(Notice.shown.some((m) => /moved .* into Obsidian's secret storage/.test(m))).toBe(true);
  });

  it("stays in data.json, with the warning, where the secret storage refuses it", async () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    const app = new App();
    app.secretStorage!.broken = true;
    expect(loadApiKey(app as never, "oaa_k")).toEqual({ key: "oaa_k", where: "data.json", migrated: false });
    const plugin = await start(app, { settings: { apiKey: "oaa_k" }, sync: { pending: {} } });
    expect(plugin.keyStorage).toBe("data.json");
    await plugin.saveSettings();
    expect(plugin.data!.settings.apiKey).toBe("oaa_k");
    expect(settingsTab(app, plugin).warning).toBeDefined();

    // The storage works at first and refuses a later key: that key is not lost.
    const other = new App();
    const p2 = await start(other, { settings: {}, sync: { pending: {} } });
    other.secretStorage!.broken = true;
    p2.settings.apiKey = "oaa_later";
    await p2.saveSettings();
    expect(p2.keyStorage).toBe("data.json");
    expect(p2.data!.settings.apiKey).toBe("oaa_later");
    expect(warn).toHaveBeenCalledWith(expect.stringMatching(/secret storage refused the API key/), expect.any(Error));
    warn.mockRestore();
  });
});
