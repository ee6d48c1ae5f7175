/** A fake of the `obsidian` module, built from the public obsidian.d.ts: only what the plugin uses.
 * `requestUrl` is real HTTP (through fetch), so the client is tested against the real server. */

export interface RequestUrlParam {
  url: string;
  method?: string;
  contentType?: string;
  body?: string | ArrayBuffer;
  headers?: Record<string, string>;
  throw?: boolean;
}

export const requests: RequestUrlParam[] = [];
// Obsidian's requestUrl is not the page's fetch: a test that stubs fetch (no streaming) keeps this one.
const realFetch = globalThis.fetch;

export async function requestUrl(request: RequestUrlParam | string) {
  const r: RequestUrlParam = typeof request === "string" ? { url: request } : request;
  requests.push(r);
  const headers: Record<string, string> = { ...(r.headers ?? {}) };
  if (r.contentType) headers["Content-Type"] = r.contentType;
  const response = await realFetch(r.url, { method: r.method ?? "GET", headers, body: r.body });
  const text = await response.text();
  const result = {
    status: response.status,
    headers: Object.fromEntries(response.headers.entries()),
    text,
    get json() {
      return JSON.parse(text);
    },
    arrayBuffer: new TextEncoder().encode(text).buffer,
  };
  if (response.status >= 400 && r.throw !== false) throw Object.assign(new Error(`Request failed, status ${response.status}`), result);
  return result;
}

export function normalizePath(path: string): string {
  return path.replace(/\\/g, "/").replace(/\/+/g, "/").replace(/^\/|\/$/g, "");
}

/** The HTMLElement helpers Obsidian adds (createEl, createDiv, setText, empty…), on a plain object. */
export class FakeEl {
  children: FakeEl[] = [];
  classes = new Set<string>();
  text = "";
  value = "";
  type = "";
  attrs: Record<string, string> = {};
  onclick: ((e: any) => unknown) | null = null;
  listeners: Record<string, ((e: any) => unknown)[]> = {};
  constructor(readonly tag = "div") {}
  createEl(tag: string, o: { cls?: string; text?: string; href?: string; attr?: Record<string, string> } = {}): FakeEl {
    const el = new FakeEl(tag);
    if (o.cls) o.cls.split(" ").forEach((c) => el.classes.add(c));
    if (o.text) el.text = o.text;
    if (o.href) el.attrs.href = o.href;
    Object.assign(el.attrs, o.attr ?? {});
    this.children.push(el);
    return el;
  }
  createDiv(o: { cls?: string; text?: string } = {}): FakeEl {
    return this.createEl("div", o);
  }
  createSpan(o: { cls?: string; text?: string } = {}): FakeEl {
    return this.createEl("span", o);
  }
  empty(): void {
    this.children = [];
    this.text = "";
  }
  setText(t: string): void {
    this.text = t;
  }
  addClass(c: string): void {
    this.classes.add(c);
  }
  addEventListener(name: string, fn: (e: any) => unknown): void {
    (this.listeners[name] ??= []).push(fn);
  }
  /** Every element below this one, depth first. */
  all(): FakeEl[] {
    return this.children.flatMap((c) => [c, ...c.all()]);
  }
  get textContent(): string {
    return this.text + this.children.map((c) => c.textContent).join("");
  }
}

export class Notice {
  static shown: string[] = [];
  constructor(readonly message: string) {
    Notice.shown.push(message);
  }
}

export class Events {
  handlers: Record<string, ((...a: any[]) => unknown)[]> = {};
  on(name: string, cb: (...a: any[]) => unknown) {
    (this.handlers[name] ??= []).push(cb);
    return { name, cb };
  }
  trigger(name: string, ...args: any[]): void {
    for (const cb of this.handlers[name] ?? []) cb(...args);
  }
}

export class TAbstractFile {
  constructor(public path: string) {}
}

export class TFile extends TAbstractFile {
  get extension(): string {
    return this.path.includes(".") ? this.path.slice(this.path.lastIndexOf(".") + 1) : "";
  }
  get basename(): string {
    const name = this.path.slice(this.path.lastIndexOf("/") + 1);
    return name.includes(".") ? name.slice(0, name.lastIndexOf(".")) : name;
  }
}

/** The desktop adapter: the vault is a folder on disk (on mobile, another adapter, without a path). */
export class FileSystemAdapter {
  constructor(private readonly basePath: string) {}
  getName(): string {
    return this.basePath.slice(this.basePath.lastIndexOf("/") + 1);
  }
  getBasePath(): string {
    return this.basePath;
  }
}

export class Vault extends Events {
  configDir = ".obsidian";
  files = new Map<string, string>();
  /** A folder of its own unless a test says where the vault is (or, for mobile, gives another adapter). */
  adapter: unknown = new FileSystemAdapter("/fake/vault");
  getMarkdownFiles(): TFile[] {
    return [...this.files.keys()].filter((p) => p.endsWith(".md")).map((p) => new TFile(p));
  }
  getFileByPath(path: string): TFile | null {
    return this.files.has(path) ? new TFile(path) : null;
  }
  async cachedRead(file: TFile): Promise<string> {
    const text = this.files.get(file.path);
    if (text === undefined) throw new Error(`no file ${file.path}`);
    return text;
  }
}

export class Workspace extends Events {
  constructor(readonly app: App) {
    super();
  }
  opened: { linktext: string; sourcePath: string; newLeaf: unknown }[] = [];
  /** The focused leaf (a sidebar's too, once it is clicked in). */
  activeLeaf: WorkspaceLeaf | null = null;
  private ready: (() => unknown)[] = [];
  /** Leaves of the main area (from `getLeaf`), the most recently active last. */
  private rootLeaves: WorkspaceLeaf[] = [];
  onLayoutReady(cb: () => unknown): void {
    this.ready.push(cb);
  }
  layoutReady(): void {
    this.ready.splice(0).forEach((cb) => cb());
  }
  async openLinkText(linktext: string, sourcePath: string, newLeaf?: unknown): Promise<void> {
    this.opened.push({ linktext, sourcePath, newLeaf });
  }
  /** The active leaf's file, else that of the main area's most recent leaf (as with a sidebar focused). */
  getActiveFile(): TFile | null {
    const fileOf = (leaf: WorkspaceLeaf | null | undefined): TFile | null => {
      const file = (leaf?.view as { file?: unknown } | null)?.file;
      return file instanceof TFile ? file : null;
    };
    return fileOf(this.activeLeaf) ?? fileOf(this.getMostRecentLeaf());
  }
  /** A new leaf in the main area (a tab). */
  getLeaf(): WorkspaceLeaf {
    const leaf = new WorkspaceLeaf(this.app);
    this.rootLeaves.push(leaf);
    return leaf;
  }
  setActiveLeaf(leaf: WorkspaceLeaf): void {
    this.activeLeaf = leaf;
    const i = this.rootLeaves.indexOf(leaf);
    if (i >= 0) this.rootLeaves.push(...this.rootLeaves.splice(i, 1));
  }
  getActiveViewOfType<T>(type: abstract new (...args: any[]) => T): T | null {
    const view = this.activeLeaf?.view;
    return view instanceof type ? view : null;
  }
  /** The main area's most recently active leaf, while a sidebar leaf may be the active one. */
  getMostRecentLeaf(): WorkspaceLeaf | null {
    return this.rootLeaves[this.rootLeaves.length - 1] ?? null;
  }
  /** The views plugins registered (`Plugin.registerView`), by type: what `setViewState` makes. */
  viewCreators = new Map<string, (leaf: WorkspaceLeaf) => unknown>();
  /** Leaves of the right sidebar (from `getRightLeaf`). */
  rightLeaves: WorkspaceLeaf[] = [];
  revealed: WorkspaceLeaf[] = [];
  getLeavesOfType(type: string): WorkspaceLeaf[] {
    return [...this.rootLeaves, ...this.rightLeaves].filter((l) => (l.view as { getViewType?: () => string } | null)?.getViewType?.() === type);
  }
  getRightLeaf(): WorkspaceLeaf | null {
    const leaf = new WorkspaceLeaf(this.app);
    this.rightLeaves.push(leaf);
    return leaf;
  }
  async revealLeaf(leaf: WorkspaceLeaf): Promise<void> {
    this.revealed.push(leaf);
  }
}

/** App.secretStorage (Obsidian 1.11.4+): secrets kept by the app on this device, outside the vault. */
export class SecretStorage extends Events {
  secrets = new Map<string, string>();
  /** Set to make setSecret throw (a device whose keychain is unavailable). */
  broken = false;
  setSecret(id: string, secret: string): void {
    if (!/^[a-z0-9]+(-[a-z0-9]+)*$/.test(id)) throw new Error(`invalid secret id '${id}'`);
    if (this.broken) throw new Error("the secret store is unavailable");
    this.secrets.set(id, secret);
  }
  getSecret(id: string): string | null {
    return this.secrets.get(id) ?? null;
  }
  listSecrets(): string[] {
    return [...this.secrets.keys()];
  }
}

/** Links as the user's settings make them; this fake: wikilinks, shortest path when the name is unique. */
export class FileManager {
  constructor(private readonly vault: Vault) {}
  generateMarkdownLink(file: TFile, _sourcePath: string, subpath = "", alias = ""): string {
    const name = file.extension === "md" ? file.path.slice(0, -3) : file.path;
    const base = name.slice(name.lastIndexOf("/") + 1);
    const unique = [...this.vault.files.keys()].filter((p) => p.slice(p.lastIndexOf("/") + 1).replace(/\.md$/, "") === base).length === 1;
    const target = (unique ? base : name) + subpath;
    return alias ? `[[${target}|${alias}]]` : `[[${target}]]`;
  }
}

export class App {
  vault = new Vault();
  workspace: Workspace = new Workspace(this);
  fileManager = new FileManager(this.vault);
  /** Absent (undefined) on an Obsidian older than 1.11.4: `new App({ secretStorage: false })`. */
  secretStorage: SecretStorage | undefined;
  constructor(o: { secretStorage?: boolean } = {}) {
    this.secretStorage = o.secretStorage === false ? undefined : new SecretStorage();
  }
}

export class Component {
  registerEvent(): void {}
  register(): void {}
}

export class WorkspaceLeaf {
  view: unknown = null;
  constructor(readonly app: App) {}
  /** Makes the registered view of that type in this leaf and opens it, as Obsidian does. */
  async setViewState(state: { type: string; active?: boolean }): Promise<void> {
    const create = this.app.workspace.viewCreators.get(state.type);
    if (!create) return;
    const view = create(this) as { onOpen?: () => Promise<void> | void };
    this.view = view;
    await view.onOpen?.();
    if (state.active) this.app.workspace.setActiveLeaf(this);
  }
  /** Opens the file in a Markdown view whose editor holds the vault's text, the cursor at its end. */
  async openFile(file: TFile): Promise<void> {
    const view = new MarkdownView(this);
    view.file = file;
    view.editor.setValue(this.app.vault.files.get(file.path) ?? "");
    view.editor.setCursor(view.editor.offsetToPos(view.editor.getValue().length));
    this.view = view;
  }
}

export interface EditorPosition {
  line: number;
  ch: number;
}

/** The note's text in an editor, with a cursor (and a selection from `anchor` to `head`). */
export class Editor {
  private text = "";
  private anchor: EditorPosition = { line: 0, ch: 0 };
  private head: EditorPosition = { line: 0, ch: 0 };
  getValue(): string {
    return this.text;
  }
  setValue(content: string): void {
    this.text = content;
    this.setCursor(0, 0);
  }
  posToOffset(pos: EditorPosition): number {
    const lines = this.text.split("\n");
    return lines.slice(0, pos.line).reduce((n, l) => n + l.length + 1, 0) + pos.ch;
  }
  offsetToPos(offset: number): EditorPosition {
    const before = this.text.slice(0, offset).split("\n");
    return { line: before.length - 1, ch: before[before.length - 1].length };
  }
  getCursor(side: "from" | "to" | "head" | "anchor" = "head"): EditorPosition {
    const [a, h] = [this.posToOffset(this.anchor), this.posToOffset(this.head)];
    if (side === "from") return this.offsetToPos(Math.min(a, h));
    if (side === "to") return this.offsetToPos(Math.max(a, h));
    return { ...(side === "anchor" ? this.anchor : this.head) };
  }
  setCursor(pos: EditorPosition | number, ch?: number): void {
    const at = typeof pos === "number" ? { line: pos, ch: ch ?? 0 } : pos;
    this.anchor = { ...at };
    this.head = { ...at };
  }
  setSelection(anchor: EditorPosition, head: EditorPosition = anchor): void {
    this.anchor = { ...anchor };
    this.head = { ...head };
  }
  getSelection(): string {
    return this.text.slice(this.posToOffset(this.getCursor("from")), this.posToOffset(this.getCursor("to")));
  }
  replaceRange(replacement: string, from: EditorPosition, to: EditorPosition = from): void {
    const [start, end] = [this.posToOffset(from), this.posToOffset(to)];
    this.text = this.text.slice(0, start) + replacement + this.text.slice(end);
  }
  /** Replaces the selection (or inserts at the cursor); the cursor ends after the inserted text. */
  replaceSelection(replacement: string): void {
    const start = this.posToOffset(this.getCursor("from"));
    this.replaceRange(replacement, this.getCursor("from"), this.getCursor("to"));
    this.setCursor(this.offsetToPos(start + replacement.length));
  }
}

export class ItemView extends Component {
  app: App;
  containerEl = new FakeEl();
  contentEl = new FakeEl();
  constructor(readonly leaf: WorkspaceLeaf) {
    super();
    this.app = leaf.app;
  }
}

export class MarkdownView extends ItemView {
  editor = new Editor();
  file: TFile | null = null;
  getViewType(): string {
    return "markdown";
  }
  getMode(): "source" | "preview" {
    return "source";
  }
}

export const MarkdownRenderer = {
  rendered: [] as string[],
  async render(_app: App, markdown: string, el: FakeEl): Promise<void> {
    MarkdownRenderer.rendered.push(markdown);
    el.createDiv({ text: markdown });
  },
};

export class Modal {
  /** Every modal opened, the latest last. */
  static opened: Modal[] = [];
  containerEl = new FakeEl();
  modalEl = new FakeEl();
  titleEl = new FakeEl();
  contentEl = new FakeEl();
  isOpen = false;
  constructor(readonly app: App) {}
  open(): void {
    Modal.opened.push(this);
    this.isOpen = true;
    void this.onOpen();
  }
  close(): void {
    if (!this.isOpen) return;
    this.isOpen = false;
    this.onClose();
  }
  onOpen(): Promise<void> | void {}
  onClose(): void {}
  setTitle(title: string): this {
    this.titleEl.setText(title);
    return this;
  }
  setContent(content: string): this {
    this.contentEl.setText(content);
    return this;
  }
}

export interface Instruction {
  command: string;
  purpose: string;
}

export abstract class SuggestModal<T> extends Modal {
  placeholder = "";
  emptyStateText = "No results found.";
  instructions: Instruction[] = [];
  setPlaceholder(p: string): void {
    this.placeholder = p;
  }
  setInstructions(i: Instruction[]): void {
    this.instructions = i;
  }
  abstract getSuggestions(query: string): T[] | Promise<T[]>;
  abstract renderSuggestion(value: T, el: FakeEl): void;
  abstract onChooseSuggestion(item: T, evt: MouseEvent | KeyboardEvent): void;
}

/** A command, as obsidian.d.ts has it: Obsidian runs `editorCheckCallback` (or `editorCallback`) with the
 * active editor and its view, `checkCallback` with `checking` true to see whether it is offered. */
export interface Command {
  id: string;
  name: string;
  callback?: () => unknown;
  checkCallback?: (checking: boolean) => boolean | void;
  editorCallback?: (editor: Editor, ctx: MarkdownView) => unknown;
  editorCheckCallback?: (checking: boolean, editor: Editor, ctx: MarkdownView) => boolean | void;
}

export class Plugin extends Component {
  data: unknown = null;
  constructor(readonly app: App) {
    super();
  }
  async loadData(): Promise<unknown> {
    return this.data;
  }
  async saveData(d: unknown): Promise<void> {
    this.data = JSON.parse(JSON.stringify(d));
  }
  /** What `registerView` and `addCommand` were given, by view type and command id. */
  views = new Map<string, (leaf: WorkspaceLeaf) => unknown>();
  commands = new Map<string, Command>();
  registerView(type: string, viewCreator: (leaf: WorkspaceLeaf) => unknown): void {
    this.views.set(type, viewCreator);
    this.app.workspace.viewCreators.set(type, viewCreator);
  }
  addSettingTab(): void {}
  addRibbonIcon(): void {}
  addCommand<C extends Command>(command: C): C {
    this.commands.set(command.id, command);
    return command;
  }
  addStatusBarItem(): FakeEl {
    return new FakeEl();
  }
}

export class PluginSettingTab {
  containerEl = new FakeEl();
  constructor(
    readonly app: App,
    readonly plugin: unknown,
  ) {}
}

/** A setting row; its controls are kept so that a test can type into them and press them. */
export class Setting {
  static all: Setting[] = [];
  name = "";
  desc = "";
  controls: any[] = [];
  constructor(readonly containerEl: FakeEl) {
    Setting.all.push(this);
  }
  setName(n: string): this {
    this.name = n;
    return this;
  }
  setDesc(d: string): this {
    this.desc = d;
    return this;
  }
  private control(cb: (c: any) => unknown): this {
    const c: any = {
      inputEl: new FakeEl("input"),
      value: undefined,
      setValue(v: unknown) {
        c.value = v;
        return c;
      },
      setButtonText(t: string) {
        c.text = t;
        return c;
      },
      addOptions(o: Record<string, string>) {
        c.options = o;
        return c;
      },
      onChange(fn: (v: unknown) => unknown) {
        c.change = fn;
        return c;
      },
      onClick(fn: () => unknown) {
        c.click = fn;
        return c;
      },
    };
    this.controls.push(c);
    cb(c);
    return this;
  }
  addText(cb: (c: any) => unknown): this {
    return this.control(cb);
  }
  addTextArea(cb: (c: any) => unknown): this {
    return this.control(cb);
  }
  addButton(cb: (c: any) => unknown): this {
    return this.control(cb);
  }
  addToggle(cb: (c: any) => unknown): this {
    return this.control(cb);
  }
  addDropdown(cb: (c: any) => unknown): this {
    return this.control(cb);
  }
}
