import { App, FileSystemAdapter, Notice, PluginSettingTab, Setting } from "obsidian";
import { ApiClient, ApiError, type Status } from "./api";

export interface AiAgentSettings {
  serverUrl: string;
  apiKey: string;
  searchMode: "hybrid" | "keyword" | "semantic";
  syncEnabled: boolean;
  /** Vault folders that are synced (one per line); empty: the whole vault. */
  includeFolders: string[];
  /** Vault folders that are never pushed (one per line), even inside an included folder. */
  excludeFolders: string[];
}

export const DEFAULT_SETTINGS: AiAgentSettings = {
  serverUrl: "http://127.0.0.1:8000",
  apiKey: "",
  searchMode: "hybrid",
  syncEnabled: false,
  includeFolders: [],
  excludeFolders: [],
};

function folders(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((f): f is string => typeof f === "string").map((f) => f.trim()).filter(Boolean) : [];
}

/** The settings saved in data.json over the defaults; a field an older version did not save (or a
 * folder list that is not a list) takes its default. */
export function loadSettings(saved: unknown): AiAgentSettings {
  const s = { ...DEFAULT_SETTINGS, ...(saved && typeof saved === "object" ? (saved as Partial<AiAgentSettings>) : {}) };
  return { ...s, includeFolders: folders(s.includeFolders), excludeFolders: folders(s.excludeFolders) };
}

/** The folders named (`Folder`, `Folder/` and `/Folder` are the same folder), blanks left out. */
function folderNames(list: string[]): string[] {
  return list.map((f) => f.trim().replace(/^\/+|\/+$/g, "")).filter(Boolean);
}

function under(folders: string[], path: string): boolean {
  return folders.some((f) => path === f || path.startsWith(f + "/"));
}

/** Not synced: outside every synced folder (when any is set: none is the whole vault), or inside a
 * folder never synced (also within a synced one). */
export function isExcluded(settings: AiAgentSettings, path: string): boolean {
  const include = folderNames(settings.includeFolders);
  return (include.length > 0 && !under(include, path)) || under(folderNames(settings.excludeFolders), path);
}

/** This vault's folder on disk, where the app has one (desktop); null on mobile. */
export function localVaultPath(app: App): string | null {
  const adapter = app.vault.adapter;
  return typeof FileSystemAdapter === "function" && adapter instanceof FileSystemAdapter ? adapter.getBasePath() : null;
}

function isLoopback(serverUrl: string): boolean {
  try {
    const host = new URL(serverUrl).hostname.replace(/^\[|\]$/g, "");
    return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
  } catch {
    return false;
  }
}

function samePath(a: string, b: string): boolean {
  return spelled(a) === spelled(b);
}

/** A folder's path spelled the same way on every system: `/` for `\\`, no trailing `/`, lower case
 * after a drive letter (as the server spells it before hashing it into `vault_id`). */
function spelled(path: string): string {
  const p = path.replace(/\\/g, "/").replace(/\/+$/, "") || "/";
  return /^[a-z]:/i.test(p) ? p.toLowerCase() : p;
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** What /status tells about the server's vault: whether it is this vault's folder on this machine.
 * The server shows its vault folder to admin keys only (and to everyone when it needs no key), and to
 * every key the SHA-256 of that folder's path (`vault_id`), which is compared with this vault's; `known`
 * false: the server tells neither. Same machine means a loopback server URL and the same folder (the
 * server's is resolved; a vault reached through a symlink is not recognised). */
export async function serverVault(
  status: Status,
  serverUrl: string,
  local: string | null,
): Promise<{ known: boolean; path: string | null; readsThisVault: boolean }> {
  const path = typeof status.index.vault === "string" && status.index.vault ? status.index.vault : null;
  const id = typeof status.index.vault_id === "string" && status.index.vault_id ? status.index.vault_id : null;
  let same = false;
  if (local !== null && isLoopback(serverUrl)) {
    same = path !== null ? samePath(path, local) : id !== null && (await sha256Hex(spelled(local))) === id;
  }
  return { known: path !== null || id !== null, path, readsThisVault: same };
}

function keyText(status: Status): string {
  const key = status.key;
  if (!key) return "";
  if (!key.auth) return "; the server asks for no key (every request may do everything)";
  const can = key.scopes.includes("admin") ? "admin (everything)" : key.scopes.join(", ") || "nothing";
  const missing = key.scopes.includes("admin") ? [] : ["read", "write"].filter((s) => !key.scopes.includes(s));
  const hint = missing.length ? ` (without ${missing.join(" and ")}: ${missing.includes("read") ? "no chat or search" : "no sync"})` : "";
  return `; key '${key.name}': ${can}${hint}`;
}

/** One line saying what works or exactly what is wrong; `ok` false for any failure. It names the key's
 * scopes; with `local` (this vault's folder) it says whether the server reads this vault itself, where
 * it can tell; and it says when this app's origin is refused by CORS (answers then come whole, not
 * streamed). */
export async function testConnection(client: ApiClient, local: string | null = null): Promise<{ ok: boolean; message: string }> {
  try {
    const status = await client.status();
    const i = status.index;
    const vault = await serverVault(status, client.serverUrl, local);
    const where = vault.readsThisVault
      ? `; it reads this vault's folder itself${vault.path !== null ? ` (${vault.path})` : ""}: leave sync off`
      : vault.path !== null
        ? `; its vault: ${vault.path}`
        : "";
    const blocked = await client.probeFetch();
    const cors =
      blocked === null
        ? ""
        : `. Warning: CORS refuses this app's origin (${blocked}), so answers arrive whole instead of streaming: ` +
          "add the origin (app://obsidian.md on desktop; capacitor://localhost and http://localhost on mobile) to the server's `server.cors_origins`";
    return {
      ok: true,
      message: `Connected: server ${status.version}, ${i.sources} sources, ${i.chunks} chunks indexed${keyText(status)}${where}${cors}`,
    };
  } catch (e) {
    if (e instanceof ApiError) {
      const what =
        e.status === 401
          ? "401 unauthorized"
          : e.status === 403
            ? "403 forbidden"
            : e.status
              ? `HTTP ${e.status}`
              : e.code === "tls"
                ? "TLS"
                : "unreachable";
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
          const result = await testConnection(this.host.client, localVaultPath(this.app));
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
      .setDesc(
        "Turn on only for a server on another machine, which has no copy of this vault: the plugin then pushes the notes to it. " +
          "Leave it off when the server runs on this machine and reads this vault's folder itself (it indexes the files as they change); " +
          "a server on this machine tells the plugin which folder it reads, so sync stays off for it anyway and Test connection says so.",
      )
      .addToggle((t) =>
        t.setValue(s.syncEnabled).onChange((v) => {
          s.syncEnabled = v;
          save();
        }),
      );
    new Setting(containerEl)
      .setName("Folders synced")
      .setDesc("One vault folder per line; empty: the whole vault. Applied at the next Sync now or start; notes already on the server outside them stay there.")
      .addTextArea((t) =>
        t.setValue(s.includeFolders.join("\n")).onChange((v) => {
          s.includeFolders = v.split("\n").map((f) => f.trim()).filter(Boolean);
          save();
        }),
      );
    new Setting(containerEl)
      .setName("Folders never synced")
      .setDesc("One vault folder per line, also inside a synced folder.")
      .addTextArea((t) =>
        t.setValue(s.excludeFolders.join("\n")).onChange((v) => {
          s.excludeFolders = v.split("\n").map((f) => f.trim()).filter(Boolean);
          save();
        }),
      );
  }
}
