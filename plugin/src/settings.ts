import { App, Notice, PluginSettingTab, Setting } from "obsidian";
import { ApiClient, ApiError } from "./api";

export interface AiAgentSettings {
  serverUrl: string;
  apiKey: string;
  searchMode: "hybrid" | "keyword" | "semantic";
  syncEnabled: boolean;
  /** Vault folders that are never pushed (one per line). */
  excludeFolders: string[];
}

export const DEFAULT_SETTINGS: AiAgentSettings = {
  serverUrl: "http://127.0.0.1:8000",
  apiKey: "",
  searchMode: "hybrid",
  syncEnabled: false,
  excludeFolders: [],
};

export function isExcluded(settings: AiAgentSettings, path: string): boolean {
  return settings.excludeFolders.some((f) => f && (path === f || path.startsWith(f.replace(/\/+$/, "") + "/")));
}

/** One line saying what works or exactly what is wrong; `ok` false for any failure. */
export async function testConnection(client: ApiClient): Promise<{ ok: boolean; message: string }> {
  try {
    const status = await client.status();
    const i = status.index;
    return {
      ok: true,
      message: `Connected: server ${status.version}, ${i.sources} sources, ${i.chunks} chunks indexed`,
    };
  } catch (e) {
    if (e instanceof ApiError) {
      const what = e.status === 401 ? "401 unauthorized" : e.status === 403 ? "403 forbidden" : e.status ? `HTTP ${e.status}` : "unreachable";
      return { ok: false, message: `Connection failed (${what}): ${e.message}` };
    }
    return { ok: false, message: `Connection failed: ${String(e)}` };
  }
}

export type KeyStorage = "secret-storage" | "data.json";

export const KEY_IN_SECRET_STORAGE = "Kept in Obsidian's secret storage on this device, not in the vault's files.";
export function keyInDataJson(configDir: string): string {
  return (
    "Warning: this Obsidian has no secret storage (it came with Obsidian 1.11.4), so the key is stored in the plugin's " +
    `settings file, ${configDir}/plugins/obsidian-ai-agent/data.json, which sync services (Obsidian Sync, git, cloud folders) ` +
    "copy to other devices and backups. Update Obsidian to keep the key out of the vault's files, or use a key with the " +
    "fewest scopes you need."
  );
}

export interface SettingsHost {
  settings: AiAgentSettings;
  keyStorage: KeyStorage;
  client: ApiClient;
  saveSettings(): Promise<void>;
}

export class AiAgentSettingTab extends PluginSettingTab {
  constructor(
    app: App,
    private readonly host: SettingsHost & ConstructorParameters<typeof PluginSettingTab>[1],
  ) {
    super(app, host);
  }

  display(): void {
    const { containerEl } = this;
    const s = this.host.settings;
    const save = (): void => void this.host.saveSettings();
    containerEl.empty();
    new Setting(containerEl)
      .setName("Server URL")
      .setDesc("The obsidian-ai-agent server, e.g. http://127.0.0.1:8000. Nothing else is ever contacted.")
      .addText((t) =>
        t.setValue(s.serverUrl).onChange((v) => {
          s.serverUrl = v.trim();
          save();
        }),
      );
    const inSecretStorage = this.host.keyStorage === "secret-storage";
    new Setting(containerEl)
      .setName("API key")
      .setDesc(`A key of the server (read for chat and search; write for sync). ${inSecretStorage ? KEY_IN_SECRET_STORAGE : ""}`.trim())
      .addText((t) => {
        t.inputEl.type = "password";
        t.setValue(s.apiKey).onChange((v) => {
          s.apiKey = v.trim();
          save();
        });
      });
    if (!inSecretStorage) containerEl.createDiv({ cls: "oaa-warning mod-warning", text: keyInDataJson(this.app.vault.configDir) });
    new Setting(containerEl)
      .setName("Test connection")
      .setDesc("Checks the URL and the key against the server's /status.")
      .addButton((b) =>
        b.setButtonText("Test connection").onClick(async () => {
          const result = await testConnection(this.host.client);
          new Notice(result.message);
        }),
      );
    new Setting(containerEl)
      .setName("Search mode")
      .addDropdown((d) =>
        d
          .addOptions({ hybrid: "Hybrid", keyword: "Keyword", semantic: "Semantic" })
          .setValue(s.searchMode)
          .onChange((v) => {
            s.searchMode = v as AiAgentSettings["searchMode"];
            save();
          }),
      );
    new Setting(containerEl)
      .setName("Sync the vault to the server")
      .setDesc("Only for a server on another machine. Off when the server reads this vault itself.")
      .addToggle((t) =>
        t.setValue(s.syncEnabled).onChange((v) => {
          s.syncEnabled = v;
          save();
        }),
      );
    new Setting(containerEl)
      .setName("Folders never synced")
      .setDesc("One vault folder per line.")
      .addTextArea((t) =>
        t.setValue(s.excludeFolders.join("\n")).onChange((v) => {
          s.excludeFolders = v.split("\n").map((f) => f.trim()).filter(Boolean);
          save();
        }),
      );
  }
}
