/** Starts the real obsidian-ai-agent service once for the test run, over a private copy of the Tasks docs vault
 * (`../shared/corpora/obsidian-tasks/docs_vault` beside the checkout). */

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { TestProject } from "vitest/node";
import type {} from "vitest";

declare module "vitest" {
  export interface ProvidedContext {
    server: { url: string; key: string; vault: string };
  }
}

const REPO = resolve(import.meta.dirname, "..", "..");
const CLI = join(REPO, ".venv", "bin", "obsidian-ai-agent");

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      s.close(() => (typeof address === "object" && address ? ok(address.port) : fail(new Error("no port"))));
    });
  });
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (!existsSync(CLI)) {
    throw new Error(`${CLI} is missing: the plugin's tests run against the real server; run \`make install\` at the repo root first`);
  }
  const tmp = mkdtempSync(join(tmpdir(), "oaa-plugin-test-"));
  const vault = join(tmp, "vault");
  const data = join(tmp, "data");
  const source = join(REPO, "..", "shared", "corpora", "obsidian-tasks", "docs_vault");
  if (!existsSync(source)) throw new Error(`${source} is missing: the plugin's tests read the corpora beside the checkout`);
  cpSync(source, vault, { recursive: true });
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("OAA_")));
  Object.assign(env, {
    HF_HUB_OFFLINE: "1",
    TOKENIZERS_PARALLELISM: "false",
    OAA_VAULT: vault,
    OAA_SERVER__RUN_JOBS: "true",
    OAA_SERVER__RATE_LIMITS__ENABLED: "false",
    // Indexing would queue the answer sentences' job; the tests do not need it sharing the cores.
    OAA_ANSWER__PREPARE_UNIT_VECTORS: "false",
  });
  const indexed = spawnSync(CLI, ["--data-dir", data, "index", vault], { env, encoding: "utf8", timeout: 900_000 });
  if (indexed.status !== 0) throw new Error(`indexing the docs vault failed:\n${indexed.stderr}${indexed.stdout}`);

  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let log = "";
  const proc: ChildProcess = spawn(CLI, ["--data-dir", data, "serve", "--no-index", "--port", String(port)], {
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  proc.stderr?.on("data", (b: Buffer) => (log = (log + b.toString()).slice(-5000)));
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`serve exited with ${proc.exitCode}:\n${log}`);
    if (Date.now() > deadline) {
      proc.kill();
      throw new Error(`serve did not answer /health within 120 s:\n${log}`);
    }
    try {
      if ((await fetch(`${url}/health`)).ok) break;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  const key = readFileSync(join(data, "admin.key"), "utf8").trim();
  project.provide("server", { url, key, vault });

  return async () => {
    proc.kill("SIGTERM");
    await new Promise<void>((r) => {
      const t = setTimeout(() => {
        proc.kill("SIGKILL");
        r();
      }, 20_000);
      proc.once("exit", () => {
        clearTimeout(t);
        r();
      });
    });
    rmSync(tmp, { recursive: true, force: true });
  };
}
