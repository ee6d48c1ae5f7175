import { describe, expect, it } from "vitest";
import { ApiError } from "../src/api";
import { DEFAULT_SETTINGS, isExcluded } from "../src/settings";
import { sha256Hex, VaultSync, type SyncServer, type SyncState } from "../src/sync";
import { fileStateCounts, fileStateLabel } from "../src/syncstate";
import { Vault } from "./fake-obsidian";

/** A server that records what it was sent and does what the real one does with it: a move
 * (`movedFrom`) takes the note from its old path, or is a 404 when nothing is there. `moves` false: a
 * server from before moves, which ignores `movedFrom`. (The real server: plugin.test.ts.) */
class RecordingServer implements SyncServer {
  calls: string[] = [];
  failPuts = 0;
  moves = true;
  constructor(public files: Record<string, string> = {}) {}
  async manifest() {
    this.calls.push("manifest");
    const m: Record<string, string> = {};
    for (const [p, t] of Object.entries(this.files)) m[p] = await sha256Hex(t);
    return m;
  }
  async putNote(path: string, content: string, options: { wait?: boolean; movedFrom?: string } = {}) {
    if (this.failPuts > 0) {
      this.failPuts--;
      throw new Error("the server is away");
    }
    const from = this.moves ? options.movedFrom : undefined;
    this.calls.push(`put ${path}${options.wait ? " (wait)" : ""}${from !== undefined ? ` from ${from}` : ""}`);
    if (from !== undefined) {
      if (!(from in this.files)) {
        this.calls.push("404");
        throw new ApiError(404, `the server answered 404: no note '${from}' to move`, "not_found");
      }
      delete this.files[from];
    }
    this.files[path] = content;
    return { path, moved_from: from ?? null };
  }
  async deleteNote(path: string) {
    this.calls.push(`delete ${path}`);
    delete this.files[path];
  }
}

function rename(vault: Vault, from: string, to: string): void {
  vault.files.set(to, vault.files.get(from)!);
  vault.files.delete(from);
}

function vaultOf(files: Record<string, string>): Vault {
  const v = new Vault();
  for (const [p, t] of Object.entries(files)) v.files.set(p, t);
  return v;
}

const noWait = { sleep: async () => {} };

describe("sync", () => {
  it("uploads only the changed and new notes after one manifest call, and deletes what the vault lost", async () => {
    const remote = new RecordingServer({ "a.md": "same", "b.md": "old", "gone.md": "x", "doc.pdf": "pdf" });
    const vault = vaultOf({ "a.md": "same", "b.md": "new", "c.md": "added", "image.png": "" });
    const sync = new VaultSync(vault, remote, null, noWait);
    await sync.diff();
    await sync.flush();
    expect(remote.calls[0]).toBe("manifest");
    expect(remote.calls.filter((c) => c === "manifest")).toHaveLength(1);
    expect(remote.calls.slice(1).sort()).toEqual(["delete gone.md", "put b.md", "put c.md"]);
    expect(Object.keys(remote.files).sort()).toEqual(["a.md", "b.md", "c.md", "doc.pdf"]);
    // A second start finds nothing to push.
    remote.calls = [];
    const again = new VaultSync(vault, remote, null, noWait);
    expect(await again.diff()).toBe(0);
    expect(remote.calls).toEqual(["manifest"]);
  });

  it("sends a delete, and a rename as one move that the server makes (the new path put with moved_from)", async () => {
    const remote = new RecordingServer({ "a.md": "A", "b.md": "B" });
    const vault = vaultOf({ "a.md": "A", "b.md": "B" });
    const sync = new VaultSync(vault, remote, null, noWait);
    await sync.diff();
    vault.files.delete("a.md");
    sync.deleted("a.md");
    rename(vault, "b.md", "Folder/b2.md");
    sync.renamed("Folder/b2.md", "b.md");
    expect(Object.fromEntries(sync.pending)).toEqual({ "a.md": "delete", "Folder/b2.md": "move:b.md" });
    await sync.flush();
    expect(remote.calls).toEqual(["manifest", "delete a.md", "put Folder/b2.md (wait) from b.md"]);
    expect(remote.files).toEqual({ "Folder/b2.md": "B" });
  });

  it("deletes the old path itself after a move sent to a server without moves", async () => {
    const remote = new RecordingServer({ "b.md": "B" });
    remote.moves = false;
    const vault = vaultOf({ "b.md": "B" });
    const sync = new VaultSync(vault, remote, null, noWait);
    await sync.diff();
    rename(vault, "b.md", "Folder/b2.md");
    sync.renamed("Folder/b2.md", "b.md");
    await sync.flush();
    expect(remote.calls).toEqual(["manifest", "put Folder/b2.md (wait)", "delete b.md"]);
    expect(remote.files).toEqual({ "Folder/b2.md": "B" });
  });

  it("puts a moved note plainly when the server holds nothing at its old path (a retried move)", async () => {
    const remote = new RecordingServer({ "b.md": "B" }); // the move went through, its answer was lost
    const vault = vaultOf({ "b.md": "B" });
    const sync = new VaultSync(vault, remote, { pending: { "b.md": "move:a.md" } }, noWait);
    await sync.flush();
    expect(remote.calls).toEqual(["put b.md (wait) from a.md", "404", "put b.md (wait)"]);
    expect(remote.files).toEqual({ "b.md": "B" });
    expect(sync.pending.size).toBe(0);
  });

  it("retries a move that failed, as a move", async () => {
    const remote = new RecordingServer({ "a.md": "A" });
    const vault = vaultOf({ "a.md": "A" });
    const statuses: string[] = [];
    const sync = new VaultSync(vault, remote, null, { ...noWait, onStatus: (s) => statuses.push(s.state) });
    await sync.diff();
    rename(vault, "a.md", "b.md");
    sync.renamed("b.md", "a.md");
    remote.failPuts = 1;
    await sync.flush();
    expect(remote.calls).toEqual(["manifest", "put b.md (wait) from a.md"]);
    expect(remote.files).toEqual({ "b.md": "A" });
    expect(statuses[statuses.length - 1]).toBe("synced");
  });

  it("folds renames that follow each other into one move from where the server holds the note", async () => {
    const remote = new RecordingServer({ "a.md": "A" });
    const vault = vaultOf({ "a.md": "A" });
    const sync = new VaultSync(vault, remote, null, noWait);
    await sync.diff();
    rename(vault, "a.md", "b.md");
    sync.renamed("b.md", "a.md");
    rename(vault, "b.md", "X/c.md");
    sync.renamed("X/c.md", "b.md");
    vault.files.set("X/c.md", "A, edited after the move");
    sync.changed("X/c.md"); // still a move: it reads the file when it runs
    // b.md never reached the server, but a push of the first move may have been under way: deleted too.
    expect(Object.fromEntries(sync.pending)).toEqual({ "b.md": "delete", "X/c.md": "move:a.md" });
    await sync.flush();
    expect(remote.files).toEqual({ "X/c.md": "A, edited after the move" });
    expect(remote.calls).toEqual(["manifest", "delete b.md", "put X/c.md (wait) from a.md"]);

    // Renamed back to where it was: a put, no move; into an excluded folder: a delete.
    const other = new VaultSync(vault, remote, null, { ...noWait, excluded: (p) => p.startsWith("Private/") });
    rename(vault, "X/c.md", "Private/c.md");
    other.renamed("Private/c.md", "X/c.md");
    expect(Object.fromEntries(other.pending)).toEqual({ "X/c.md": "delete" });
    rename(vault, "Private/c.md", "d.md");
    other.renamed("d.md", "Private/c.md");
    expect(Object.fromEntries(other.pending)).toEqual({ "X/c.md": "delete", "d.md": "put" });
  });

  it("deletes both paths of a moved note deleted before the move was pushed, and keeps a note back at the old path", async () => {
    const remote = new RecordingServer({ "a.md": "A", "b.md": "B" });
    const vault = vaultOf({ "a.md": "A", "b.md": "B" });
    const sync = new VaultSync(vault, remote, null, noWait);
    await sync.diff();
    rename(vault, "a.md", "a2.md");
    sync.renamed("a2.md", "a.md");
    vault.files.delete("a2.md");
    sync.deleted("a2.md");
    rename(vault, "b.md", "b2.md");
    sync.renamed("b2.md", "b.md");
    vault.files.set("b.md", "a new b"); // a new note where the moved one was
    sync.changed("b.md");
    await sync.flush();
    expect(remote.files).toEqual({ "b2.md": "B", "b.md": "a new b" });
    expect(remote.calls).not.toContain("delete b.md");
  });

  it("sends a note renamed while Obsidian was closed as a move, found by its hash in the manifest", async () => {
    const remote = new RecordingServer({ "Old/a.md": "A", "same.md": "S", "gone.md": "G" });
    const vault = vaultOf({ "New/a.md": "A", "same.md": "S", "new.md": "N" });
    const sync = new VaultSync(vault, remote, null, noWait);
    await sync.diff();
    expect(Object.fromEntries(sync.pending)).toEqual({ "New/a.md": "move:Old/a.md", "new.md": "put", "gone.md": "delete" });
    await sync.flush();
    expect(remote.calls.slice(1).sort()).toEqual(["delete gone.md", "put New/a.md (wait) from Old/a.md", "put new.md"]);
    expect(remote.files).toEqual({ "New/a.md": "A", "same.md": "S", "new.md": "N" });
  });

  it("resumes a saved move after a restart as one move, without a delete of its old path", async () => {
    const remote = new RecordingServer({ "a.md": "A" });
    const vault = vaultOf({ "b.md": "A" });
    const saved: SyncState = { pending: { "b.md": "move:a.md" } };
    const sync = new VaultSync(vault, remote, saved, noWait);
    expect(await sync.diff()).toBe(1); // a.md is gone from the vault, but the queued move takes it along
    await sync.flush();
    expect(remote.calls).toEqual(["manifest", "put b.md (wait) from a.md"]);
  });

  it("keeps the queue after a failed batch, retries with backoff, and resumes from the saved state", async () => {
    const remote = new RecordingServer({});
    const files = Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`n${i}.md`, `note ${i}`]));
    const vault = vaultOf(files);
    let saved: SyncState | null = null;
    const waits: number[] = [];
    const statuses: string[] = [];
    const options = {
      batchSize: 2,
      attempts: 3,
      backoff: [10, 20],
      sleep: async (ms: number) => void waits.push(ms),
      save: async (s: SyncState) => void (saved = JSON.parse(JSON.stringify(s))),
      onStatus: (s: { state: string }) => statuses.push(s.state),
    };
    const first = new VaultSync(vault, remote, null, options);
    await first.diff();
    waits.length = 0;
    remote.failPuts = 100; // the server goes away after the diff
    await first.flush();
    expect(statuses[statuses.length - 1]).toBe("error");
    expect(waits).toEqual([10, 20]);
    expect(Object.keys(saved!.pending)).toHaveLength(5);

    // A restart: the saved queue is pushed, with the manifest showing nothing new.
    remote.failPuts = 1; // one more failure, then it is back: the retry gets through
    const second = new VaultSync(vault, remote, saved, options);
    await second.diff();
    await second.flush();
    expect(statuses[statuses.length - 1]).toBe("synced");
    expect(Object.keys(remote.files).sort()).toEqual(Object.keys(files).sort());
    expect(saved!.pending).toEqual({});
  });

  it("pushes only the included folders, less the excluded ones, and leaves the server's other notes alone", async () => {
    const remote = new RecordingServer({ "Elsewhere/old.md": "o", "Work/gone.md": "g" });
    const vault = vaultOf({ "Work/a.md": "A", "Work/Secret/s.md": "S", "Top.md": "T", "Projects/Active/p.md": "P", "Projects/x.md": "X" });
    const settings = { ...DEFAULT_SETTINGS, includeFolders: ["Work", "Projects/Active"], excludeFolders: ["Work/Secret"] };
    const sync = new VaultSync(vault, remote, null, { ...noWait, excluded: (p) => isExcluded(settings, p) });
    await sync.diff();
    await sync.flush();
    expect(remote.calls.slice(1).sort()).toEqual(["delete Work/gone.md", "put Projects/Active/p.md", "put Work/a.md"]);
    expect(Object.keys(remote.files).sort()).toEqual(["Elsewhere/old.md", "Projects/Active/p.md", "Work/a.md"]);
    // A note moved out of the synced folders is deleted from the server; one moved in is put.
    rename(vault, "Work/a.md", "Top2.md");
    sync.renamed("Top2.md", "Work/a.md");
    rename(vault, "Top.md", "Work/Top.md");
    sync.renamed("Work/Top.md", "Top.md");
    expect(Object.fromEntries(sync.pending)).toEqual({ "Work/a.md": "delete", "Work/Top.md": "put" });
  });

  it("tells the state of every file it knows: synced, queued (with its last error), not compared yet, outside the folders", async () => {
    const remote = new RecordingServer({ "a.md": "A", "b.md": "B", "c.md": "C" });
    const vault = vaultOf({ "a.md": "A", "b.md": "B2", "c2.md": "C", "new.md": "N", "Private/p.md": "P" });
    const sync = new VaultSync(vault, remote, { pending: { "old.md": "delete" } }, { ...noWait, attempts: 1, batchSize: 2, excluded: (p) => p.startsWith("Private/") });
    expect(sync.files().map((f) => `${f.path} ${f.state}`)).toEqual(["old.md delete", "a.md unknown", "b.md unknown", "c2.md unknown", "new.md unknown", "Private/p.md excluded"]);
    await sync.diff();
    remote.failPuts = 100;
    await sync.flush(); // old.md deleted, then b.md's put fails: the run stops
    const files = sync.files();
    expect(files).toEqual([
      { path: "b.md", state: "put", error: "the server is away" },
      { path: "c2.md", state: "move", from: "c.md" },
      { path: "new.md", state: "put" },
      { path: "a.md", state: "synced" },
      { path: "Private/p.md", state: "excluded" },
    ]);
    expect(files.map(fileStateLabel)).toEqual([
      "error: the server is away (still pending put)",
      "pending move from c.md",
      "pending put",
      "synced",
      "not synced (outside the synced folders)",
    ]);
    expect(fileStateCounts(files)).toBe("1 synced · 2 pending · 1 error · 1 outside the synced folders");
    expect(fileStateLabel({ path: "x.md", state: "delete" })).toBe("pending delete");
    expect(fileStateLabel({ path: "x.md", state: "unknown" })).toBe("not compared with the server yet");
    // Once it goes through, the error is gone.
    remote.failPuts = 0;
    await sync.flush();
    expect(sync.files().map((f) => `${f.path} ${f.state}`)).toEqual(["a.md synced", "b.md synced", "c2.md synced", "new.md synced", "Private/p.md excluded"]);
  });
});
