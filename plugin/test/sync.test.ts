import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { ApiClient } from "../src/api";
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
  async putNote(path: string, content: string) {
    if (this.failPuts > 0) {
      this.failPuts--;
      throw new Error("the server is away");
    }
    this.calls.push(`put ${path}`);
    this.files[path] = content;
  }
  async deleteNote(path: string) {
    this.calls.push(`delete ${path}`);
    delete this.files[path];
  }
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

  it("sends a delete and a rename (as delete of the old path and put of the new)", async () => {
    const remote = new RecordingServer({ "a.md": "A", "b.md": "B" });
    const vault = vaultOf({ "a.md": "A", "b.md": "B" });
    const sync = new VaultSync(vault, remote, null, noWait);
    await sync.diff();
    vault.files.delete("a.md");
    sync.deleted("a.md");
    vault.files.delete("b.md");
    vault.files.set("Folder/b2.md", "B");
    sync.renamed("Folder/b2.md", "b.md");
    await sync.flush();
    expect(remote.calls).toEqual(["manifest", "delete a.md", "delete b.md", "put Folder/b2.md"]);
    expect(remote.files).toEqual({ "Folder/b2.md": "B" });
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

  it("finds nothing to push for the vault the server holds, then pushes a new note, its rename and its deletion", async () => {
    const vault = vaultOf(walk(server.vault));
    const sync = new VaultSync(vault, client, null, { sleep: async () => {}, backoff: [200] });
    expect(await sync.diff()).toBe(0);

    vault.files.set("Inbox/From the plugin.md", "# From the plugin\n\nThe zebracorn pasture is fenced.\n");
    sync.changed("Inbox/From the plugin.md");
    await sync.flush();
    await until(async () => (await client.search("zebracorn pasture", { k: 1 }))[0]?.path === "Inbox/From the plugin.md", "the pushed note");

    vault.files.delete("Inbox/From the plugin.md");
    vault.files.set("Inbox/Moved.md", "# From the plugin\n\nThe zebracorn pasture is fenced.\n");
    sync.renamed("Inbox/Moved.md", "Inbox/From the plugin.md");
    await sync.flush();
    await until(async () => {
      const m = await client.manifest();
      return "Inbox/Moved.md" in m && !("Inbox/From the plugin.md" in m);
    }, "the rename");

    vault.files.delete("Inbox/Moved.md");
    sync.deleted("Inbox/Moved.md");
    await sync.flush();
    await until(async () => !("Inbox/Moved.md" in (await client.manifest())), "the deletion");
    expect(sync.pending.size).toBe(0);
  });
});
