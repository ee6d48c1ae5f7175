/** Keeps a remote server's copy of the vault in sync: one manifest call on start, then only differences.
 *
 * The queue of pending pushes is saved after every batch, so a restart resumes where it stopped.
 *
 * A rename is a move: `PUT /api/notes/<new path>?moved_from=<old path>`. The server moves the file and
 * indexes it as a move in one job, so the note keeps its vectors even when its file name, its title and
 * part of every chunk's embedded text, changed (a PUT of the new path and a DELETE of the old one would
 * embed the renamed note again), and the old path is gone once it answers. A 404 means the server holds
 * nothing at the old path (a retried move that went through, a note it never had): the note is then put
 * plainly. A server that does not move (no `moved_from` in its answer) wrote the new path beside the old
 * one, which is then DELETEd. */

import { ApiError, type JobAccepted } from "./api";

/** `move:<old path>`: the note at the key's path was renamed from there. */
export type Op = "put" | "delete" | `move:${string}`;

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
  /** `wait`: answer once the note is indexed. `movedFrom`: the server moves the note from there (an
   * `ApiError` 404 when it holds nothing there), and says so in the answer's `moved_from`. */
  putNote(path: string, content: string, options?: { wait?: boolean; movedFrom?: string }): Promise<Partial<JobAccepted> | null | void>;
  deleteNote(path: string): Promise<void>;
}

function movedFrom(op: Op | undefined): string | null {
  return op !== undefined && op.startsWith("move:") ? op.slice(5) : null;
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

/** What the sync knows of one file (`VaultSync.files`). `unknown`: not compared with the server yet (no
 * manifest read since the start); `excluded`: a note outside the synced folders. `error`: why the last
 * push of a queued file failed (it is still queued). */
export type FileState =
  | { path: string; state: "synced" | "unknown" | "excluded" }
  | { path: string; state: "put" | "delete"; error?: string }
  | { path: string; state: "move"; from: string; error?: string };

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
  /** Why the last push of a queued path failed; cleared when it goes through. */
  private readonly errors = new Map<string, string>();
  /** Whether a manifest was compared with the vault since the start. */
  private compared = false;
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
    // Notes the server lacks, by hash: one whose bytes the server holds under a path the vault lost was
    // renamed while Obsidian was closed, and is sent as a move.
    const added = new Map<string, string[]>();
    const moveSources = new Set([...this.pending.values()].map(movedFrom).filter((p): p is string => p !== null));
    let n = 0;
    for (const file of this.vault.getMarkdownFiles()) {
      if (this.options.excluded(file.path)) continue;
      local.add(file.path);
      if (this.pending.has(file.path)) continue;
      const hash = await sha256Hex(await this.vault.cachedRead(file));
      if (remote[file.path] !== hash) {
        this.pending.set(file.path, "put");
        if (!(file.path in remote)) added.set(hash, [...(added.get(hash) ?? []), file.path]);
      }
      // Hashing reads every note: give the editor the event loop back now and then.
      if (++n % 25 === 0) await this.options.sleep(0);
    }
    for (const [path, hash] of Object.entries(remote)) {
      if (!path.toLowerCase().endsWith(".md") || local.has(path) || this.options.excluded(path)) continue;
      if (moveSources.has(path)) continue; // a queued move deletes it
      const to = added.get(hash)?.shift();
      if (to !== undefined) this.pending.set(to, `move:${path}`);
      else this.pending.set(path, "delete");
    }
    this.compared = true;
    await this.save();
    return this.pending.size;
  }

  /** Every file the sync knows, read-only: the vault's notes (synced, or outside the synced folders) and
   * every queued path with its op and the error of its last push. */
  files(): FileState[] {
    const out = new Map<string, FileState>();
    for (const file of this.vault.getMarkdownFiles()) {
      const state = this.options.excluded(file.path) ? "excluded" : this.compared ? "synced" : "unknown";
      out.set(file.path, { path: file.path, state });
    }
    for (const [path, op] of this.pending) {
      const from = movedFrom(op);
      const error = this.errors.get(path);
      const state: FileState = from !== null ? { path, state: "move", from } : { path, state: op === "delete" ? "delete" : "put" };
      out.set(path, error === undefined ? state : { ...state, error });
    }
    // Failed first, then queued, then the rest, the notes outside the synced folders last; each by path.
    const rank = (f: FileState): number =>
      f.state === "synced" || f.state === "unknown" ? 2 : f.state === "excluded" ? 3 : "error" in f && f.error !== undefined ? 0 : 1;
    return [...out.values()].sort((a, b) => rank(a) - rank(b) || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  private tracked(path: string): boolean {
    return path.toLowerCase().endsWith(".md") && !this.options.excluded(path);
  }

  /** Vault events: queued at once, pushed by the next `flush` (the caller debounces it). */
  changed(path: string): void {
    // A modified note still waiting to be moved stays a move (the move reads the file when it runs).
    if (this.tracked(path) && movedFrom(this.pending.get(path)) === null) this.pending.set(path, "put");
  }

  deleted(path: string): void {
    if (!this.tracked(path)) return;
    const from = movedFrom(this.pending.get(path));
    if (from !== null && this.pending.get(from) !== "put") this.pending.set(from, "delete"); // the server still holds it there
    this.pending.set(path, "delete");
  }

  /** A move that keeps the server's vectors; a note moved into or out of what is synced is a put or a delete. */
  renamed(path: string, oldPath: string): void {
    if (!this.tracked(oldPath)) return this.changed(path);
    if (!this.tracked(path)) return this.deleted(oldPath);
    const prior = this.pending.get(oldPath);
    // Where the server holds the note: the old path, or where a queued move of it comes from.
    const from = movedFrom(prior) ?? oldPath;
    if (from !== oldPath) {
      // A push of the earlier move may be on its way: the server may come to hold oldPath as well.
      this.pending.set(oldPath, "delete");
    } else {
      this.pending.delete(oldPath);
    }
    this.pending.set(path, from === path ? "put" : `move:${from}`);
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
          try {
            await this.push(path, op);
          } catch (e) {
            this.errors.set(path, e instanceof Error ? e.message : String(e));
            throw e;
          }
          this.errors.delete(path);
          if (this.pending.get(path) === op) this.pending.delete(path);
        }
        return null;
      } catch (e) {
        message = e instanceof Error ? e.message : String(e);
      }
    }
    return message;
  }

  private file(path: string): SyncFile | undefined {
    return (this.vault.getFileByPath ? this.vault.getFileByPath(path) : this.vault.getMarkdownFiles().find((f) => f.path === path)) ?? undefined;
  }

  private async push(path: string, op: Op): Promise<void> {
    if (op === "delete") return this.server.deleteNote(path);
    const from = movedFrom(op);
    const file = this.file(path);
    if (!file) {
      // gone since it was queued
      await this.server.deleteNote(path);
      if (from !== null && !this.file(from)) await this.server.deleteNote(from);
      return;
    }
    const content = await this.vault.cachedRead(file);
    if (from === null) {
      await this.server.putNote(path, content);
      return;
    }
    // Waited for: the indexer takes it as a move only while no file is at the old path, and a note put
    // there next brings one back.
    let answer;
    try {
      answer = await this.server.putNote(path, content, { wait: true, movedFrom: from });
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      // Nothing at the old path: a retry of a move that went through (unchanged bytes are a no-op).
      await this.server.putNote(path, content, { wait: true });
      return;
    }
    if (answer?.moved_from === from) return;
    // A server without moves wrote the new path only: the old one goes, unless a note is back at it.
    if (!this.file(from) && this.pending.get(from) !== "put") await this.server.deleteNote(from);
  }

  private save(): Promise<void> {
    return this.options.save({ pending: Object.fromEntries(this.pending) });
  }
}
