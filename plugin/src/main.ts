import { Notice, Plugin, TAbstractFile, TFile, WorkspaceLeaf } from "obsidian";
import { ApiClient, ApiError, type Answer, type AskOptions, type Job } from "./api";
import { CHAT_VIEW, ChatView, noteQuestion, selectionQuestion } from "./chat";
import { RELATED_VIEW, RelatedView } from "./related";
import { SearchModal } from "./search";
import { loadApiKey, secretStorageOf, writeSecret } from "./secrets";
import {
  AiAgentSettingTab,
  AiAgentSettings,
  DEFAULT_SETTINGS,
  isExcluded,
  KeyStorage,
  loadSettings,
  localVaultPath,
  serverVault,
  testConnection,
} from "./settings";
import { SyncState, SyncStatus, VaultSync } from "./sync";
import { SyncStateModal } from "./syncstate";

interface PluginData {
  settings: AiAgentSettings;
  sync: SyncState;
}

const FLUSH_AFTER_MS = 2000;
const JOB_FINISHED = new Set(["succeeded", "failed", "cancelled"]);

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** "3 indexed, 1 removed, 40 unchanged, 12 chunks embedded in 4.2 s": a reindex job's result. */
function reindexSummary(result: Record<string, unknown> | null): string {
  if (!result) return "";
  const n = (k: string): number => (typeof result[k] === "number" ? result[k] : 0);
  const failed = Array.isArray(result.failed) ? result.failed.length : 0;
  const parts = [
    `${n("indexed")} indexed`,
    ...(n("moved") ? [`${n("moved")} moved`] : []),
    `${n("removed")} removed`,
    `${n("unchanged")} unchanged`,
    `${n("chunks_embedded")} chunks embedded`,
    ...(failed ? [`${failed} failed (the server's index errors list them)`] : []),
  ];
  return `: ${parts.join(", ")}${typeof result.seconds === "number" ? ` in ${result.seconds} s` : ""}`;
}

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
  /** The status bar's text (the sync state modal repeats it). */
  private statusText = "";
  /** Set by the last sync start: the server reads this vault's folder itself (its path), so nothing is pushed. */
  private serverReadsVault: string | null = null;
  private unloaded = false;
  /** How often a reindex job is asked about until it ends, and for how long at most. */
  jobPollMs = 2000;
  jobFollowMs = 30 * 60_000;

  async onload(): Promise<void> {
    const data = ((await this.loadData()) ?? {}) as Partial<PluginData>;
    this.settings = loadSettings(data.settings);
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
      id: "ask-selection",
      name: "Ask about the selection",
      editorCheckCallback: (checking, editor, ctx) => {
        const selection = editor.getSelection();
        if (!selection.trim()) return false;
        if (!checking) void this.askInChat(selectionQuestion(selection, ctx.file?.basename));
        return true;
      },
    });
    this.addCommand({
      id: "ask-note",
      name: "Ask about the current note",
      checkCallback: (checking) => {
        const file = this.app.workspace.getActiveFile();
        if (!file || !["md", "pdf"].includes(file.extension)) return false;
        if (!checking) {
          const { question, options } = noteQuestion(file);
          void this.askInChat(question, options);
        }
        return true;
      },
    });
    this.addCommand({
      id: "test-connection",
      name: "Test connection",
      callback: async () => new Notice((await testConnection(this.client, localVaultPath(this.app))).message),
    });
    this.addCommand({ id: "sync-now", name: "Sync now", callback: () => this.startSync(true) });
    this.addCommand({ id: "sync-state", name: "Show sync state per file", callback: () => this.showSyncState() });
    this.addCommand({ id: "reindex", name: "Reindex the vault (admin keys)", callback: () => this.reindex() });

    this.statusEl = this.addStatusBarItem();
    // Vault `create` events fire for every file while the vault loads: listen only once it is ready.
    this.app.workspace.onLayoutReady(() => void this.startSync(false));
  }

  onunload(): void {
    this.unloaded = true;
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

  private async openView(type: string): Promise<WorkspaceLeaf | null> {
    const { workspace } = this.app;
    let leaf: WorkspaceLeaf | null = workspace.getLeavesOfType(type)[0] ?? null;
    if (!leaf) {
      leaf = workspace.getRightLeaf(false);
      if (!leaf) return null;
      await leaf.setViewState({ type, active: true });
    }
    await workspace.revealLeaf(leaf); // loads a deferred view too
    return leaf;
  }

  /** Asks in the chat pane (opened if need be), as if typed there: the pane streams the answer, lists its
   * sources and offers its actions; null when the pane could not be opened or the ask failed (a notice). */
  async askInChat(question: string, options: AskOptions = {}): Promise<Answer | null> {
    const view = (await this.openView(CHAT_VIEW))?.view;
    if (!(view instanceof ChatView)) {
      new Notice("AI Agent: the chat pane could not be opened; open it with the command \"Open chat\" and ask there.");
      return null;
    }
    return view.submit(question, options);
  }

  /** POST /api/reindex (admin keys): a notice with the job, then one when it ends. */
  async reindex(): Promise<Job | null> {
    let job: Job;
    try {
      job = await this.client.reindex();
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) {
        new Notice(
          "AI Agent: reindexing needs an admin key, and this key lacks the admin scope. Make one on the server " +
            "(`obsidian-ai-agent keys create --name admin --scope admin`) and set it here while you reindex, or run " +
            `\`obsidian-ai-agent index\` on the server. (${e.message})`,
        );
      } else {
        new Notice(`AI Agent: the reindex did not start: ${messageOf(e)}`);
      }
      return null;
    }
    const id = job.job_id ?? job.id ?? 0;
    if (JOB_FINISHED.has(job.status)) {
      this.jobEnded(id, job);
      return job;
    }
    new Notice(`AI Agent: the server is reindexing its vault: job ${id} (${job.status}${job.lane ? `, ${job.lane} lane` : ""}); a notice follows when it ends.`);
    void this.followJob(id);
    return job;
  }

  private jobEnded(id: number, job: Job): void {
    if (job.status === "succeeded") new Notice(`AI Agent: reindex job ${id} done${reindexSummary(job.result)}.`);
    else new Notice(`AI Agent: reindex job ${id} ${job.status}${job.error ? `: ${job.error}` : ""}.`);
  }

  /** Asks about the job until it ends (at most `jobFollowMs`), then says how it ended. */
  private async followJob(id: number): Promise<void> {
    const until = Date.now() + this.jobFollowMs;
    let failures = 0;
    while (!this.unloaded) {
      await new Promise((resolve) => window.setTimeout(resolve, this.jobPollMs));
      if (this.unloaded) return;
      if (Date.now() > until) {
        new Notice(`AI Agent: reindex job ${id} is still running; follow it at /api/jobs/${id} or on the server's dashboard.`);
        return;
      }
      try {
        const job = await this.client.job(id);
        failures = 0;
        if (JOB_FINISHED.has(job.status)) return this.jobEnded(id, job);
      } catch (e) {
        if (++failures >= 3) {
          new Notice(`AI Agent: cannot follow reindex job ${id} (${messageOf(e)}); it goes on on the server.`);
          return;
        }
      }
    }
  }

  /** The sync state per file, in a modal. */
  showSyncState(): SyncStateModal {
    const summary = this.serverReadsVault !== null
      ? `Sync is off for this server: it reads this vault's folder itself (${this.serverReadsVault}); nothing is pushed.`
      : !this.settings.syncEnabled
        ? "Sync is off: nothing is pushed (turn it on in the settings only for a server on another machine)."
        : this.sync === null
          ? "Sync has not started yet (it starts once the workspace is ready, or with \"Sync now\")."
          : this.statusText || "Sync is starting.";
    const modal = new SyncStateModal(this.app, summary, this.sync?.files() ?? []);
    modal.open();
    return modal;
  }

  private showStatus(status: SyncStatus): void {
    const text =
      status.state === "synced"
        ? "AI sync: synced"
        : status.state === "syncing"
          ? `AI sync: syncing ${status.remaining}`
          : `AI sync: error (${status.remaining} waiting)`;
    this.statusText = status.state === "error" ? `${text}: ${status.message}` : text;
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
      if (this.settings.syncEnabled && this.serverReadsVault === null && f instanceof TFile) {
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
    if (await this.checkServerReadsVault(asked)) return;
    const sync = this.ensureSync();
    try {
      await sync.diff();
    } catch (e) {
      this.showStatus({ state: "error", message: e instanceof Error ? e.message : String(e), remaining: sync.pending.size });
      return;
    }
    await sync.flush();
  }

  /** Whether the server reads this vault's folder itself (same machine), where /status tells (its vault
   * folder to an admin key, the folder's hash to every key): then sync stays off and nothing is pushed. A key
   * that cannot tell, or a failed /status, lets sync go on (its own requests report what is wrong). */
  private async checkServerReadsVault(asked: boolean): Promise<boolean> {
    const local = localVaultPath(this.app);
    let reads: string | null = null;
    if (local !== null) {
      try {
        const vault = await serverVault(await this.client.status(), this.client.serverUrl, local);
        if (vault.readsThisVault) reads = vault.path ?? local;
      } catch {
        // cannot tell: the manifest request says what is wrong
      }
    }
    const before = this.serverReadsVault;
    this.serverReadsVault = reads;
    if (reads === null) return false;
    this.statusText = "AI sync: off (the server reads this vault)";
    this.statusEl?.setText(this.statusText);
    if (asked || before === null) {
      new Notice(
        `AI Agent: the server at ${this.client.serverUrl} reads this vault's folder itself (${reads}): sync stays off and nothing is pushed. ` +
          "Turn \"Sync the vault to the server\" off in the settings.",
      );
    }
    return true;
  }
}
