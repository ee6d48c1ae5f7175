/** Where the API key lives: Obsidian's secret storage (app.secretStorage, Obsidian 1.11.4+) when the app
 * has it, which keeps it out of the vault's files; else the plugin's data.json, with a warning in the
 * settings tab, since whatever syncs the vault copies that file. */

import type { App, SecretStorage } from "obsidian";

/** Lowercase letters, digits and dashes, as SecretStorage.setSecret requires. */
export const SECRET_ID = "obsidian-ai-agent-api-key";

/** The app's secret storage, or null where this Obsidian has none (feature-detected at run time). */
export function secretStorageOf(app: App): SecretStorage | null {
  const store = (app as Partial<Pick<App, "secretStorage">>).secretStorage;
  return store && typeof store.getSecret === "function" && typeof store.setSecret === "function" ? store : null;
}

export interface LoadedKey {
  key: string;
  /** Where the key is kept from now on. */
  where: "secret-storage" | "data.json";
  /** A key was found in data.json and moved into secret storage: data.json must be written without it. */
  migrated: boolean;
}

/** The key at start: from secret storage, or moved there from data.json (`fromData`) when it is found
 * there; data.json's own where the app has no secret storage (or the storage refuses it). */
export function loadApiKey(app: App, fromData: string): LoadedKey {
  const store = secretStorageOf(app);
  if (!store) return { key: fromData, where: "data.json", migrated: false };
  if (fromData) {
    // A key in data.json is the newer one (typed on a device without secret storage, or before this
    // version): it replaces the stored secret.
    if (!writeSecret(store, fromData)) return { key: fromData, where: "data.json", migrated: false };
    return { key: fromData, where: "secret-storage", migrated: true };
  }
  try {
    return { key: store.getSecret(SECRET_ID) ?? "", where: "secret-storage", migrated: false };
  } catch {
    return { key: "", where: "data.json", migrated: false };
  }
}

/** Stores the key in secret storage; false if the storage refused it (the caller keeps it in data.json). */
export function writeSecret(store: SecretStorage, key: string): boolean {
  try {
    store.setSecret(SECRET_ID, key);
    return (store.getSecret(SECRET_ID) ?? "") === key;
  } catch (e) {
    console.warn("AI Agent: Obsidian's secret storage refused the API key; it stays in data.json", e);
    return false;
  }
}
