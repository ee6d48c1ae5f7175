import { Notice, Plugin, TAbstractFile, TFile, WorkspaceLeaf } from "obsidian";
import { ApiClient } from "./api";
import { CHAT_VIEW, ChatView } from "./chat";
import { RELATED_VIEW, RelatedView } from "./related";
import { SearchModal } from "./search";
import { loadApiKey, secretStorageOf, writeSecret } from "./secrets";
import { AiAgentSettingTab, AiAgentSettings, DEFAULT_SETTINGS, isExcluded, KeyStorage, testConnection } from "./settings";
import { SyncState, SyncStatus, VaultSync } from "./sync";

interface PluginData {
  settings: AiAgentSettings;
  sync: SyncState;
}

const FLUSH_AFTER_MS = 2000;

export default class AiAgentPlugin extends Plugin {
  settings: AiAgentSettings = { ...DEFAULT_SETTINGS };
  client = new ApiClient(() => this.settings);
  sync: VaultSync | null = null;
  /** Where the API key is kept: Obsidian's secret storage where the app has it, else data.json. */
  keyStorage: KeyStorage = "data.json";
  /** The key as last written to secret storage (so that saving the sync queue does not rewrite it). */
  private storedKey: string | null = null;
  private syncState: SyncState = { pending: {} };
  private statusEl: HTMLElement | null = null;
  private flushTimer: number | null = null;

  async onload(): Promise<void> {
    const data = ((await this.loadData()) ?? {}) as Partial<PluginData>;
    this.settings = { ...DEFAULT_SETTINGS, ...(data.settings ?? {}) };
    this.syncState = data.sync ?? { pending: {} };
    const key = loadApiKey(this.app, typeof this.settings.apiKey === "string" ? this.settings.apiKey.trim() : "");
    this.settings.apiKey = key.key;
    this.keyStorage = key.where;
    if (key.where === "secret-storage") this.storedKey = key.key;
    if (key.migrated) {
      await this.saveSettings(); // data.json without the key
      new Notice("AI Agent: the API key was moved from the plugin's data.json into Obsidian's secret storage; the vault's files no longer hold it.");
    }

    this.registerView(CHAT_VIEW, (leaf) => new ChatView(leaf, this.client));
    this.registerView(RELATED_VIEW, (leaf) => new RelatedView(leaf, this.client));
    this.addSettingTab(new AiAgentSettingTab(this.app, this));
    this.addRibbonIcon("message-square", "AI Agent: open chat", () => void this.openView(CHAT_VIEW));

    this.addCommand({ id: "open-chat", name: "Open chat", callback: () => void this.openView(CHAT_VIEW) });
    this.addCommand({
      id: "search",
      name: "Search notes",
      callback: () => new SearchModal(this.app, this.client, () => this.settings.searchMode).open(),
    });
    this.addCommand({ id: "related", name: "Related notes", callback: () => void this.openView(RELATED_VIEW) });
    this.addCommand({
      id: "test-connection",
      name: "Test connection",
      callback: async () => new Notice((await testConnection(this.client)).message),
    });
    this.addCommand({ id: "sync-now", name: "Sync now", callback: () => void this.startSync(true) });

    this.statusEl = this.addStatusBarItem();
    // Vault `create` events fire for every file while the vault loads: listen only once it is ready.
    this.app.workspace.onLayoutReady(() => void this.startSync(false));
  }

  onunload(): void {
    if (this.flushTimer !== null) window.clearTimeout(this.flushTimer);
  }

  /** data.json gets the settings and the sync queue; the key only where the app has no secret storage. */
  async saveSettings(): Promise<void> {
    let apiKey = this.settings.apiKey;
    if (this.keyStorage === "secret-storage") {
      const store = secretStorageOf(this.app);
      if (store && (this.storedKey === apiKey || writeSecret(store, apiKey))) {
        this.storedKey = apiKey;
        apiKey = "";
      } else {
        this.keyStorage = "data.json"; // the storage refused it: kept in data.json, and the tab says so
      }
    }
    await this.saveData({ settings: { ...this.settings, apiKey }, sync: this.syncState } satisfies PluginData);
  }

  private async openView(type: string): Promise<void> {
    const { workspace } = this.app;
    let leaf: WorkspaceLeaf | null = workspace.getLeavesOfType(type)[0] ?? null;
    if (!leaf) {
      leaf = workspace.getRightLeaf(false);
      if (!leaf) return;
      await leaf.setViewState({ type, active: true });
    }
    await workspace.revealLeaf(leaf);
  }

  private showStatus(status: SyncStatus): void {
    const text =
      status.state === "synced"
        ? "AI sync: synced"
        : status.state === "syncing"
          ? `AI sync: syncing ${status.remaining}`
          : `AI sync: error (${status.remaining} waiting)`;
    this.statusEl?.setText(text);
    if (status.state === "error") new Notice(`AI Agent sync stopped: ${status.message}. It retries on the next change or "Sync now".`);
  }

  private ensureSync(): VaultSync {
    if (this.sync) return this.sync;
    const sync = new VaultSync(this.app.vault, this.client, this.syncState, {
      excluded: (path) => isExcluded(this.settings, path),
      save: async (state) => {
        this.syncState = state;
        await this.saveSettings();
      },
      onStatus: (s) => this.showStatus(s),
    });
    const later = (): void => {
      if (this.flushTimer !== null) window.clearTimeout(this.flushTimer);
      this.flushTimer = window.setTimeout(() => void sync.flush(), FLUSH_AFTER_MS);
    };
    const on = (f: TAbstractFile, fn: () => void): void => {
      if (this.settings.syncEnabled && f instanceof TFile) {
        fn();
        later();
      }
    };
    this.registerEvent(this.app.vault.on("create", (f) => on(f, () => sync.changed(f.path))));
    this.registerEvent(this.app.vault.on("modify", (f) => on(f, () => sync.changed(f.path))));
    this.registerEvent(this.app.vault.on("delete", (f) => on(f, () => sync.deleted(f.path))));
    this.registerEvent(this.app.vault.on("rename", (f, old) => on(f, () => sync.renamed(f.path, old))));
    this.sync = sync;
    return sync;
  }

  /** The manifest diff, then the pushes; runs in the background, the editor never waits on it. */
  async startSync(asked: boolean): Promise<void> {
    if (!this.settings.syncEnabled) {
      if (asked) new Notice("AI Agent: sync is off; turn it on in the settings (only for a remote server).");
      return;
    }
    const sync = this.ensureSync();
    try {
      await sync.diff();
    } catch (e) {
      this.showStatus({ state: "error", message: e instanceof Error ? e.message : String(e), remaining: sync.pending.size });
      return;
    }
    await sync.flush();
  }
}
