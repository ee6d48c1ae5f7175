/** The client of the obsidian-ai-agent server: the only place the plugin touches the network. */

import { requestUrl } from "obsidian";
import { SseParser } from "./sse";

export interface ServerConfig {
  serverUrl: string;
  apiKey: string;
}

export interface Citation {
  n: number;
  path: string;
  title: string;
  heading_path: string[];
  start_line: number | null;
  end_line: number | null;
  page: number | null;
  kind: string;
  snippet: string;
  link: string;
}

export interface SearchResult {
  path: string;
  title: string;
  heading_path: string[];
  page: number | null;
  kind: string;
  snippet: string;
  score: number;
  link: string;
}

export interface RelatedNote {
  path: string;
  title: string;
  score: number;
  similarity: number;
  links_to: boolean;
  linked_from: boolean;
  link: string;
}

export interface Answer {
  question: string;
  text: string;
  mode: "llm" | "extractive" | "declined";
  citations: Citation[];
  sources: Citation[];
  provider: string;
  model: string | null;
  declined: boolean;
  notice: string | null;
  conversation_id: string | null;
}

export type AskEvent =
  | { type: "retrieval"; query: string; sources: Citation[] }
  | { type: "token"; text: string }
  | { type: "error"; message: string; code: string; recovered: boolean }
  | { type: "answer"; answer: Answer };

export interface SearchOptions {
  k?: number;
  mode?: "hybrid" | "keyword" | "semantic";
  folder?: string;
  tag?: string;
  /** Only this note (vault-relative); the server answers 404 `note_not_indexed` when it holds none there. */
  path?: string;
}

export interface AskOptions extends SearchOptions {
  conversation_id?: string;
}

/** What a PUT or DELETE of a note answers: its indexing job (`result` is set once the job is done). */
export interface JobAccepted {
  job_id: number;
  status: "queued" | "running" | "succeeded" | "failed" | "cancelled";
  kind: string;
  lane: string;
  result: Record<string, unknown> | null;
  error: string | null;
  path: string;
  /** Set when the server moved the note here from this path (`movedFrom`); a server without moves omits it. */
  moved_from?: string | null;
}

export interface Status {
  version: string;
  /** `vault`: the server's vault folder, shown to admin keys only (null for others); `vault_id`: the
   * SHA-256 of that folder's path, shown to every key (a server before it omits it). */
  index: { sources: number; chunks: number; vectors: number; failed: number; vault?: string | null; vault_id?: string | null };
  /** The key this request presented: its name and scopes (a server before it omits it). */
  key?: { auth: boolean; name: string; scopes: string[] };
  [key: string]: unknown;
}

/** A request that got no answer at all failed on TLS (a certificate this device does not trust, a wrong
 * scheme) rather than on reaching the host, by what the platform says (Electron's `net::ERR_CERT_...`,
 * `ERR_SSL_...`; Node's `self-signed certificate`, `UNABLE_TO_VERIFY_LEAF_SIGNATURE`). */
/** An error as text, with its cause (Node's fetch says only "fetch failed" and puts the reason there). */
export function describe(e: unknown): string {
  const cause = e instanceof Error ? (e as { cause?: unknown }).cause : undefined;
  if (cause === undefined) return String(e);
  return `${String(e)}: ${cause instanceof Error ? String(cause) : JSON.stringify(cause)}`;
}

export function isTlsFailure(e: unknown): boolean {
  return /CERT|SSL|TLS|self[- ]signed|certificate|VERIFY/i.test(describe(e));
}

/** A job as `GET /api/jobs/{id}` (admin) shows it, or as `POST /api/reindex` answers (202). */
export interface Job {
  job_id?: number;
  id?: number;
  status: "queued" | "running" | "succeeded" | "failed" | "cancelled";
  kind: string;
  lane?: string;
  result: Record<string, unknown> | null;
  error: string | null;
  links?: Record<string, string>;
}

/** A refusal or failure, with what the user should do in `message`. `status` 0: no answer at all. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string = "",
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** The server's error shape is {"error": {"code", "message"}}; anything else is shown as it came. */
function errorFrom(status: number, text: string): ApiError {
  let code = "";
  let detail = text.slice(0, 300);
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string } };
    if (body.error?.message) detail = body.error.message;
    code = body.error?.code ?? "";
  } catch {
    // not JSON: keep the text
  }
  const hint =
    status === 401
      ? "the API key was refused; check it in the plugin's settings"
      : status === 403
        ? "the API key lacks the scope for this"
        : `the server answered ${status}`;
  return new ApiError(status, `${hint}: ${detail}`, code);
}

export function notePath(path: string): string {
  return path.split("/").map(encodeURIComponent).join("/");
}

export class ApiClient {
  constructor(private readonly config: () => ServerConfig) {}

  /** The server URL as set. */
  get serverUrl(): string {
    return this.config().serverUrl.trim();
  }

  private url(route: string): string {
    const base = this.config().serverUrl.trim().replace(/\/+$/, "");
    if (!/^https?:\/\//.test(base)) {
      throw new ApiError(0, `the server URL '${base}' must start with http:// or https:// (set it in the settings)`);
    }
    return base + route;
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const key = this.config().apiKey.trim();
    return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
  }

  async request<T>(method: string, route: string, body?: unknown, contentType = "application/json"): Promise<T> {
    const url = this.url(route);
    let response;
    try {
      response = await requestUrl({
        url,
        method,
        headers: this.headers(),
        contentType: body === undefined ? undefined : contentType,
        body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
        throw: false,
      });
    } catch (e) {
      if (isTlsFailure(e)) {
        throw new ApiError(
          0,
          `the TLS connection to ${url} failed (${describe(e)}): this device does not trust the server's certificate. ` +
            "Give the server a certificate from a CA this device trusts (or install its CA on the device), and check http:// against https:// in the URL",
          "tls",
        );
      }
      throw new ApiError(0, `cannot reach the server at ${url} (${describe(e)}); is it running, and is the URL right?`, "unreachable");
    }
    if (response.status >= 400) throw errorFrom(response.status, response.text);
    return (response.text ? JSON.parse(response.text) : null) as T;
  }

  health(): Promise<{ status: string; version: string }> {
    return this.request("GET", "/health");
  }

  status(): Promise<Status> {
    return this.request("GET", "/status");
  }

  async search(query: string, options: SearchOptions = {}): Promise<SearchResult[]> {
    const body = await this.request<{ results: SearchResult[] }>("POST", "/api/search", { query, ...options });
    return body.results;
  }

  async related(path: string, k = 10): Promise<RelatedNote[]> {
    const body = await this.request<{ related: RelatedNote[] }>("POST", "/api/related", { path, k });
    return body.related;
  }

  ask(question: string, options: AskOptions = {}): Promise<Answer> {
    return this.request("POST", "/api/ask", { question, ...options });
  }

  /** Whether this platform's fetch (which streaming needs, unlike requestUrl) may call the server:
   * null when it may, else what went wrong. A browser-like fetch refuses a response whose CORS headers
   * do not name this app's origin with a bare TypeError, so a failure after requestUrl worked is CORS. */
  async probeFetch(): Promise<string | null> {
    try {
      const response = await fetch(this.url("/status"), { headers: this.headers() });
      await response.body?.cancel();
      return null;
    } catch (e) {
      return describe(e);
    }
  }

  /** The answer as it is written, event by event; where the platform or a proxy cannot stream, the
   * same question as a plain request (reported as one `answer` event), so the answer is never lost. */
  async askStream(question: string, options: AskOptions, onEvent: (event: AskEvent) => void): Promise<Answer> {
    let streamed: Answer | null = null;
    let started = false;
    try {
      const response = await fetch(this.url("/api/ask"), {
        method: "POST",
        headers: this.headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify({ question, ...options, stream: true }),
      });
      if (response.status >= 400) throw errorFrom(response.status, await response.text());
      if (!response.body || !(response.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
        throw new Error("no event stream");
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser();
      const handle = (events: { event: string; data: string }[]): void => {
        for (const e of events) {
          const event = { type: e.event, ...(JSON.parse(e.data) as object) } as AskEvent;
          started = true;
          if (event.type === "answer") streamed = event.answer;
          if (event.type === "error" && !event.recovered) throw new ApiError(502, event.message, event.code);
          onEvent(event);
        }
      };
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        handle(parser.push(decoder.decode(value, { stream: true })));
      }
      handle(parser.end());
    } catch (e) {
      if (e instanceof ApiError) throw e;
      if (started) throw new ApiError(0, `the answer stream broke off (${String(e)}); ask again`);
      // Not streamable here (a mobile platform, a buffering proxy, CORS on fetch): a plain request.
      const answer = await this.ask(question, options);
      onEvent({ type: "answer", answer });
      return answer;
    }
    if (streamed === null) throw new ApiError(0, "the answer stream ended without an answer; ask again");
    return streamed;
  }

  /** Starts a reindex of the server's vault as a job (admin keys; 403 otherwise, 409 when the server has
   * no vault); an unfinished reindex is resumed instead, and its job answered. */
  reindex(full = false): Promise<Job> {
    return this.request("POST", "/api/reindex", { full });
  }

  /** One job (admin keys). */
  job(id: number): Promise<Job> {
    return this.request("GET", `/api/jobs/${id}`);
  }

  manifest(): Promise<Record<string, string>> {
    return this.request("GET", "/api/notes/manifest");
  }

  /** `wait`: the server answers once the note is indexed (its job's result then says what was embedded).
   * `movedFrom`: the note was renamed from there; the server moves it, keeping its vectors (404 when the
   * server holds nothing at that path). */
  putNote(path: string, content: string, options: { wait?: boolean; movedFrom?: string } = {}): Promise<JobAccepted> {
    const query = new URLSearchParams();
    if (options.wait) query.set("wait", "true");
    if (options.movedFrom !== undefined) query.set("moved_from", options.movedFrom);
    const q = query.toString();
    return this.request("PUT", `/api/notes/${notePath(path)}${q ? `?${q}` : ""}`, content, "text/markdown; charset=utf-8");
  }

  async deleteNote(path: string): Promise<void> {
    try {
      await this.request("DELETE", `/api/notes/${notePath(path)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return; // already gone: what was wanted
      throw e;
    }
  }
}
