import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: {
    // The plugin's `obsidian` import is the fake built from the public obsidian.d.ts.
    alias: { obsidian: fileURLToPath(new URL("./test/fake-obsidian.ts", import.meta.url)) },
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
    // One real server for the whole run, started once.
    globalSetup: ["test/server.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
