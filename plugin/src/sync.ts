/** Keeps a remote server's copy of the vault in sync: one manifest call on start, then only differences.
 *
 * The queue of pending pushes is saved after every batch, so a restart resumes where it stopped. The
 * server has no move route: a rename is a DELETE of the old path and a PUT of the new one (the server's
 * indexer recognises the same bytes under a new path as a move when it sees both). */

export type Op = "put" | "delete";

export interface SyncFile {
  path: string;
  extension: string;
}

/** The parts of Obsidian's Vault that sync reads. */
export interface SyncVault {
  getMarkdownFiles(): SyncFile[];
  getFileByPath?(path: string): SyncFile | null;
  cachedRead(file: SyncFile): Promise<string>;
}

export interface SyncServer {
  manifest(): Promise<Record<string, string>>;
  putNote(path: string, content: string): Promise<void>;
  deleteNote(path: string): Promise<void>;
}

export interface SyncState {
  pending: Record<string, Op>;
}

export interface SyncOptions {
  batchSize: number;
  /** Waits before the attempts after a failed batch, in ms; the last one repeats. */
  backoff: number[];
  /** Attempts per batch before the run stops (the queue is kept for the next run). */
  attempts: number;
  excluded: (path: string) => boolean;
  save: (state: SyncState) => Promise<void>;
  sleep: (ms: number) => Promise<void>;
  onStatus: (status: SyncStatus) => void;
}

export type SyncStatus =
  | { state: "synced" }
  | { state: "syncing"; remaining: number }
  | { state: "error"; message: string; remaining: number };

const DEFAULTS: SyncOptions = {
  batchSize: 20,
  backoff: [1000, 5000, 30000],
  attempts: 4,
  excluded: () => false,
  save: async () => {},
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  onStatus: () => {},
};

export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

export class VaultSync {
  readonly pending: Map<string, Op>;
  private readonly options: SyncOptions;
  private running: Promise<void> | null = null;
  private again = false;

  constructor(
    private readonly vault: SyncVault,
    private readonly server: SyncServer,
    state: SyncState | null,
    options: Partial<SyncOptions> = {},
  ) {
    this.options = { ...DEFAULTS, ...options };
    this.pending = new Map(Object.entries(state?.pending ?? {}));
  }

  /** Compares the vault with the server's manifest and queues what differs (the saved queue stays). */
  async diff(): Promise<number> {
    const remote = await this.server.manifest();
    const local = new Set<string>();
    let n = 0;
    for (const file of this.vault.getMarkdownFiles()) {
      if (this.options.excluded(file.path)) continue;
      local.add(file.path);
      if (this.pending.has(file.path)) continue;
      const hash = await sha256Hex(await this.vault.cachedRead(file));
      if (remote[file.path] !== hash) this.pending.set(file.path, "put");
      // Hashing reads every note: give the editor the event loop back now and then.
      if (++n % 25 === 0) await this.options.sleep(0);
    }
    for (const path of Object.keys(remote)) {
      if (path.toLowerCase().endsWith(".md") && !local.has(path) && !this.options.excluded(path)) {
        this.pending.set(path, "delete");
      }
    }
    await this.save();
    return this.pending.size;
  }

  /** Vault events: queued at once, pushed by the next `flush` (the caller debounces it). */
  changed(path: string): void {
    if (path.toLowerCase().endsWith(".md") && !this.options.excluded(path)) this.pending.set(path, "put");
  }

  deleted(path: string): void {
    if (path.toLowerCase().endsWith(".md") && !this.options.excluded(path)) this.pending.set(path, "delete");
  }

  renamed(path: string, oldPath: string): void {
    this.deleted(oldPath);
    this.changed(path);
  }

  /** Pushes the queue in batches; one flush at a time (a call while one runs makes it go round again). */
  flush(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.drain().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async drain(): Promise<void> {
    do {
      this.again = false;
      while (this.pending.size) {
        const batch = [...this.pending.entries()].slice(0, this.options.batchSize);
        this.options.onStatus({ state: "syncing", remaining: this.pending.size });
        const failure = await this.pushWithRetry(batch);
        if (failure) {
          await this.save();
          this.options.onStatus({ state: "error", message: failure, remaining: this.pending.size });
          return;
        }
        await this.save();
      }
    } while (this.again);
    this.options.onStatus({ state: "synced" });
  }

  /** null when the batch went through; else why it did not, after the last attempt. */
  private async pushWithRetry(batch: [string, Op][]): Promise<string | null> {
    let message = "";
    for (let attempt = 0; attempt < this.options.attempts; attempt++) {
      if (attempt > 0) {
        const waits = this.options.backoff;
        await this.options.sleep(waits[Math.min(attempt - 1, waits.length - 1)] ?? 0);
      }
      try {
        for (const [path, op] of batch) {
          if (this.pending.get(path) !== op) continue; // changed meanwhile: the newer op is queued
          await this.push(path, op);
          if (this.pending.get(path) === op) this.pending.delete(path);
        }
        return null;
      } catch (e) {
        message = e instanceof Error ? e.message : String(e);
      }
    }
    return message;
  }

  private async push(path: string, op: Op): Promise<void> {
    if (op === "delete") return this.server.deleteNote(path);
    const file = this.vault.getFileByPath?.(path) ?? this.vault.getMarkdownFiles().find((f) => f.path === path);
    if (!file) return this.server.deleteNote(path); // gone since it was queued
    await this.server.putNote(path, await this.vault.cachedRead(file));
  }

  private save(): Promise<void> {
    return this.options.save({ pending: Object.fromEntries(this.pending) });
  }
}
