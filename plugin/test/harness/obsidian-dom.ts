/** The fake `obsidian` module in a browser: the same fake (test/fake-obsidian.ts), with the parts that
 * draw (the HTMLElement helpers of obsidian.d.ts, ItemView, SuggestModal, MarkdownRenderer, Notice) on the
 * page's real DOM, laid out with the class names Obsidian's own app.css uses. Only what the plugin uses. */

import { App, Component, type Instruction, Notice as FakeNotice, WorkspaceLeaf } from "../fake-obsidian";

export * from "../fake-obsidian";

type Info = { cls?: string | string[]; text?: string; attr?: Record<string, string | number | boolean | null>; href?: string; placeholder?: string; type?: string; value?: string };

function createEl(this: Node, tag: string, o: Info | string = {}, callback?: (el: HTMLElement) => void): HTMLElement {
  const info: Info = typeof o === "string" ? { text: o } : o;
  const el = document.createElement(tag);
  const classes = Array.isArray(info.cls) ? info.cls : (info.cls ?? "").split(" ");
  for (const c of classes) if (c) el.classList.add(c);
  if (info.text !== undefined) el.textContent = info.text;
  for (const [k, v] of Object.entries(info.attr ?? {})) if (v !== null && v !== false) el.setAttribute(k, String(v));
  if (info.href !== undefined) el.setAttribute("href", info.href);
  if (info.placeholder !== undefined) el.setAttribute("placeholder", info.placeholder);
  if (info.type !== undefined) el.setAttribute("type", info.type);
  if (info.value !== undefined) (el as HTMLInputElement).value = info.value;
  this.appendChild(el);
  callback?.(el);
  return el;
}

// Obsidian adds these to every Node / HTMLElement (obsidian.d.ts, `declare global`).
const helpers: Record<string, unknown> = {
  createEl,
  createDiv(this: Node, o?: Info | string, cb?: (el: HTMLElement) => void) {
    return createEl.call(this, "div", o, cb);
  },
  createSpan(this: Node, o?: Info | string, cb?: (el: HTMLElement) => void) {
    return createEl.call(this, "span", o, cb);
  },
  empty(this: Node) {
    while (this.firstChild) this.removeChild(this.firstChild);
  },
  setText(this: Node, text: string) {
    this.textContent = text;
  },
};
for (const [name, fn] of Object.entries(helpers)) Object.defineProperty(Node.prototype, name, { value: fn, configurable: true });
Object.defineProperty(Element.prototype, "addClass", {
  value(this: Element, ...classes: string[]) {
    this.classList.add(...classes);
  },
  configurable: true,
});

/** Shown as Obsidian shows it: a toast at the top right, and kept in `Notice.shown` as the fake does. */
export class Notice extends FakeNotice {
  constructor(message: string) {
    super(message);
    const box = document.querySelector(".notice-container") ?? document.body.createDiv({ cls: "notice-container" });
    box.createDiv({ cls: "notice", text: message });
  }
}

export class ItemView extends Component {
  app: App;
  containerEl: HTMLElement;
  contentEl: HTMLElement;
  constructor(readonly leaf: WorkspaceLeaf) {
    super();
    this.app = leaf.app;
    this.containerEl = document.createElement("div");
    this.containerEl.className = "workspace-leaf-content";
    const header = this.containerEl.createDiv({ cls: "view-header" });
    header.createDiv({ cls: "view-header-title", text: this.getDisplayText() });
    this.contentEl = this.containerEl.createDiv({ cls: "view-content" });
  }
  getDisplayText(): string {
    return "";
  }
}

/** A small Markdown renderer (paragraphs, lists, headings, **bold**, *em*, `code`), standing in for Obsidian's. */
export const MarkdownRenderer = {
  rendered: [] as string[],
  render(_app: App, markdown: string, el: HTMLElement): Promise<void> {
    MarkdownRenderer.rendered.push(markdown);
    const inline = (parent: HTMLElement, text: string): void => {
      for (const part of text.split(/(\*\*[^*]+\*\*|\*[^*]+\*|```[^`]+```|`[^`]+`)/)) {
        if (/^\*\*[^*]+\*\*$/.test(part)) parent.createEl("strong", { text: part.slice(2, -2) });
        else if (/^\*[^*]+\*$/.test(part)) parent.createEl("em", { text: part.slice(1, -1) });
        else if (/^```[^`]+```$/.test(part)) parent.createEl("code", { text: part.slice(3, -3).replace(/^\w+\s/, "") });
        else if (/^`[^`]+`$/.test(part)) parent.createEl("code", { text: part.slice(1, -1) });
        else if (part) parent.appendChild(document.createTextNode(part));
      }
    };
    for (const block of markdown.split(/\n\s*\n/)) {
      const lines = block.split("\n").filter((l) => l.trim());
      if (!lines.length) continue;
      if (lines.every((l) => /^\s*([-*]|\d+\.)\s/.test(l))) {
        const list = el.createEl(/^\s*\d/.test(lines[0]) ? "ol" : "ul");
        for (const l of lines) inline(list.createEl("li"), l.replace(/^\s*([-*]|\d+\.)\s+/, ""));
      } else if (/^#{1,6}\s/.test(lines[0])) {
        inline(el.createEl(`h${Math.min(6, lines[0].indexOf(" ") + 2)}` as "h4"), lines[0].replace(/^#+\s+/, ""));
      } else {
        inline(el.createEl("p"), lines.join(" "));
      }
    }
    return Promise.resolve();
  },
};

export class Modal {
  containerEl: HTMLElement;
  modalEl: HTMLElement;
  constructor(readonly app: App) {
    this.containerEl = document.createElement("div");
    this.containerEl.className = "modal-container";
    this.containerEl.createDiv({ cls: "modal-bg" }).onclick = () => this.close();
    this.modalEl = this.containerEl.createDiv({ cls: "prompt" });
  }
  open(): void {
    document.body.appendChild(this.containerEl);
  }
  close(): void {
    this.containerEl.remove();
  }
}

/** Obsidian's prompt: an input, the suggestions as you type (↑/↓ to select, ↵ to choose), the instructions. */
export abstract class SuggestModal<T> extends Modal {
  emptyStateText = "No results found.";
  inputEl: HTMLInputElement;
  resultContainerEl: HTMLElement;
  private instructionsEl: HTMLElement;
  private items: T[] = [];
  private itemEls: HTMLElement[] = [];
  private selected = 0;
  private asked = 0;

  constructor(app: App) {
    super(app);
    this.inputEl = this.modalEl.createDiv({ cls: "prompt-input-container" }).createEl("input", { cls: "prompt-input", type: "text" });
    this.resultContainerEl = this.modalEl.createDiv({ cls: "prompt-results" });
    this.instructionsEl = this.modalEl.createDiv({ cls: "prompt-instructions" });
    this.inputEl.addEventListener("input", () => void this.update());
    this.inputEl.addEventListener("keydown", (e: KeyboardEvent) => {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        this.select(this.selected + (e.key === "ArrowDown" ? 1 : -1));
      } else if (e.key === "Enter" && this.items.length) {
        e.preventDefault();
        this.onChooseSuggestion(this.items[this.selected], e);
        this.close();
      }
    });
  }

  setPlaceholder(p: string): void {
    this.inputEl.placeholder = p;
  }

  setInstructions(instructions: Instruction[]): void {
    this.instructionsEl.empty();
    for (const i of instructions) {
      const el = this.instructionsEl.createDiv({ cls: "prompt-instruction" });
      el.createSpan({ cls: "prompt-instruction-command", text: i.command });
      el.createSpan({ text: i.purpose });
    }
  }

  open(): void {
    super.open();
    this.inputEl.focus();
  }

  private async update(): Promise<void> {
    const mine = ++this.asked;
    const items = await this.getSuggestions(this.inputEl.value);
    if (mine !== this.asked) return; // a newer query is on its way
    this.items = items;
    this.resultContainerEl.empty();
    this.itemEls = items.map((item) => {
      const el = this.resultContainerEl.createDiv({ cls: "suggestion-item" });
      this.renderSuggestion(item, el);
      el.onclick = (e) => {
        this.onChooseSuggestion(item, e);
        this.close();
      };
      return el;
    });
    if (!items.length && this.inputEl.value.trim()) this.resultContainerEl.createDiv({ cls: "suggestion-empty", text: this.emptyStateText });
    this.select(0);
  }

  private select(i: number): void {
    if (!this.itemEls.length) return;
    this.selected = (i + this.itemEls.length) % this.itemEls.length;
    this.itemEls.forEach((el, n) => el.classList.toggle("is-selected", n === this.selected));
  }

  abstract getSuggestions(query: string): T[] | Promise<T[]>;
  abstract renderSuggestion(value: T, el: HTMLElement): void;
  abstract onChooseSuggestion(item: T, evt: MouseEvent | KeyboardEvent): void;
}
