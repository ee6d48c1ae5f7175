import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { ApiClient, type JobAccepted } from "../src/api";
import { sha256Hex, VaultSync, type SyncServer, type SyncState } from "../src/sync";
import { Vault } from "./fake-obsidian";

const server = inject("server");

class RecordingServer implements SyncServer {
  calls: string[] = [];
  failPuts = 0;
  constructor(public files: Record<string, string> = {}) {}
  async manifest() {
    this.calls.push("manifest");
    const m: Record<string, string> = {};
    for (const [p, t] of Object.entries(this.files)) m[p] = await sha256Hex(t);
    return m;
  }
  async putNote(path: string, content: string, options: { wait?: boolean } = {}) {
    if (this.failPuts > 0) {
      this.failPuts--;
      throw new Error("the server is away");
    }
    this.calls.push(`put ${path}${options.wait ? " (wait)" : ""}`);
    this.files[path] = content;
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

  it("sends a delete, and a rename as a move: the new path put and indexed first, then the old one deleted", async () => {
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
    expect(remote.calls).toEqual(["manifest", "delete a.md", "put Folder/b2.md (wait)", "delete b.md"]);
    expect(remote.files).toEqual({ "Folder/b2.md": "B" });
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
    expect(remote.calls).toEqual(["manifest", "delete b.md", "put X/c.md (wait)", "delete a.md"]);

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
    expect(remote.calls.slice(1, 3)).toEqual(["put New/a.md (wait)", "delete Old/a.md"]);
    expect(remote.files).toEqual({ "New/a.md": "A", "same.md": "S", "new.md": "N" });
  });

  it("resumes a saved move after a restart without deleting its source twice", async () => {
    const remote = new RecordingServer({ "a.md": "A" });
    const vault = vaultOf({ "b.md": "A" });
    const saved: SyncState = { pending: { "b.md": "move:a.md" } };
    const sync = new VaultSync(vault, remote, saved, noWait);
    expect(await sync.diff()).toBe(1); // a.md is gone from the vault, but the queued move deletes it
    await sync.flush();
    expect(remote.calls).toEqual(["manifest", "put b.md (wait)", "delete a.md"]);
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
});

function walk(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const visit = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      if (statSync(full).isDirectory()) {
        if (!name.startsWith(".")) visit(full);
      } else if (name.endsWith(".md")) out[relative(root, full).split("\\").join("/")] = readFileSync(full, "utf8");
    }
  };
  visit(root);
  return out;
}

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 45_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe("sync against the real server", () => {
  const client = new ApiClient(() => ({ serverUrl: server.url, apiKey: server.key }));
  // Three sections, each long enough (40 tokens and more) to be a chunk of its own.
  const NOTE = [
    "# From the plugin",
    "",
    "The zebracorn pasture is fenced with oak posts and three rails, and the gate on its northern side is",
    "kept shut at night so that the herd stays on the meadow between the river and the old mill.",
    "",
    "## Feeding",
    "",
    "Zebracorns graze on clover at dawn and on thistles at dusk; in winter they are given hay from the",
    "barn loft twice a day, with a bucket of oats for the foals and the oldest mares of the herd.",
    "",
    "## Stabling",
    "",
    "Each zebracorn has a stall lined with straw that is changed every morning; the stalls face south so",
    "that the sun dries them, and the water troughs are scrubbed on Sundays by whoever keeps the stable.",
    "",
  ].join("\n");

  /** The client, keeping what each PUT answered (its indexing job). */
  const answers: Record<string, JobAccepted> = {};
  const recording: SyncServer = {
    manifest: () => client.manifest(),
    putNote: async (path, content, options) => (answers[path] = await client.putNote(path, content, options)),
    deleteNote: (path) => client.deleteNote(path),
  };

  async function jobResult(id: number): Promise<Record<string, number>> {
    let job: { status: string; result: Record<string, number> | null } = { status: "queued", result: null };
    await until(async () => {
      job = await client.request("GET", `/api/jobs/${id}`);
      return job.status === "succeeded";
    }, `job ${id}`);
    return job.result!;
  }

  it("finds nothing to push for the vault the server holds, then pushes a new note, its moves (keeping its vectors) and its deletion", async () => {
    const vault = vaultOf(walk(server.vault));
    const sync = new VaultSync(vault, recording, null, { sleep: async () => {}, backoff: [200] });
    expect(await sync.diff()).toBe(0);

    vault.files.set("Inbox/From the plugin.md", NOTE);
    sync.changed("Inbox/From the plugin.md");
    await sync.flush();
    const first = await jobResult(answers["Inbox/From the plugin.md"].job_id);
    expect(first.chunks_embedded).toBeGreaterThan(1);
    await until(async () => (await client.search("zebracorn pasture", { k: 1 }))[0]?.path === "Inbox/From the plugin.md", "the pushed note");

    // Moved to another folder: the new path is indexed (the PUT waits for it) with every chunk's vector
    // reused, none embedded, and the old path is gone.
    rename(vault, "Inbox/From the plugin.md", "Archive/From the plugin.md");
    sync.renamed("Archive/From the plugin.md", "Inbox/From the plugin.md");
    await sync.flush();
    const moved = answers["Archive/From the plugin.md"];
    expect(moved.status).toBe("succeeded");
    expect(moved.result).toMatchObject({ indexed: 1, chunks_embedded: 0, chunks_reused: first.chunks_embedded });
    await until(async () => {
      const m = await client.manifest();
      return "Archive/From the plugin.md" in m && !("Inbox/From the plugin.md" in m);
    }, "the old path's removal");
    const found = await client.search("zebracorns graze on clover", { k: 3 });
    expect(found[0]?.path).toBe("Archive/From the plugin.md");
    expect(found.some((r) => r.path === "Inbox/From the plugin.md")).toBe(false);

    // Renamed (a new title): found at the new name, the old one gone.
    rename(vault, "Archive/From the plugin.md", "Archive/Zebracorns.md");
    sync.renamed("Archive/Zebracorns.md", "Archive/From the plugin.md");
    await sync.flush();
    const renamed = answers["Archive/Zebracorns.md"];
    expect(renamed.status).toBe("succeeded");
    expect(Number(renamed.result!.chunks_embedded) + Number(renamed.result!.chunks_reused)).toBe(first.chunks_embedded);
    await until(async () => !("Archive/From the plugin.md" in (await client.manifest())), "the old name's removal");
    const foundRenamed = await client.search("zebracorns graze on clover", { k: 3 });
    expect(foundRenamed[0]?.path).toBe("Archive/Zebracorns.md");
    expect(foundRenamed.some((r) => r.path === "Archive/From the plugin.md")).toBe(false);

    vault.files.delete("Archive/Zebracorns.md");
    sync.deleted("Archive/Zebracorns.md");
    await sync.flush();
    await until(async () => !("Archive/Zebracorns.md" in (await client.manifest())), "the deletion");
    expect(sync.pending.size).toBe(0);
  });
});
