import js from "@eslint/js";
import tseslint from "typescript-eslint";

const NODE_ONLY = ["fs", "path", "child_process", "os", "crypto", "http", "https", "net", "electron"];

export default tseslint.config(
  { ignores: ["main.js", "node_modules/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
  },
  {
    // Plugin code runs on mobile too: no Node modules, and the network only through the API client.
    files: ["src/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        { paths: NODE_ONLY.flatMap((m) => [m, `node:${m}`]).map((name) => ({ name, message: "not on mobile" })) },
      ],
      "no-restricted-globals": [
        "error",
        { name: "XMLHttpRequest", message: "use the API client (requestUrl)" },
        { name: "WebSocket", message: "use the API client" },
        ...["process", "Buffer", "require", "__dirname", "global"].map((name) => ({ name, message: "Node only: not on mobile" })),
      ],
      "no-console": ["error", { allow: ["warn", "error"] }],
      "@typescript-eslint/no-floating-promises": "error",
    },
  },
  {
    files: ["test/**/*.ts", "vitest.config.ts"],
    rules: {
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-return": "off",
      "@typescript-eslint/unbound-method": "off",
      "@typescript-eslint/require-await": "off",
      "@typescript-eslint/no-explicit-any": "off",
    },
  },
  { files: ["*.mjs"], ...tseslint.configs.disableTypeChecked },
  { files: ["*.mjs"], languageOptions: { globals: { process: "readonly" } } },
);
