import { ItemView, MarkdownRenderer, MarkdownView, Notice, type TFile, WorkspaceLeaf } from "obsidian";
import type { Answer, ApiClient, AskOptions, Citation } from "./api";
import { answerMarkdown, citationLabel, openAllCitations, openCitation } from "./citations";

/** What an answer cites: its citations, or for a declined one the closest notes found. */
function citedBy(answer: Answer): { cited: Citation[]; heading: string } {
  if (answer.citations.length) return { cited: answer.citations, heading: "Sources:" };
  return answer.declined ? { cited: answer.sources, heading: "Closest notes:" } : { cited: [], heading: "" };
}

export const CHAT_VIEW = "obsidian-ai-agent-chat";

/** The server takes questions of up to 4,000 characters. */
export const MAX_QUESTION = 4000;

/** The question "Ask about the selection" sends: the selected text, quoted, cut to fit the server's limit. */
export function selectionQuestion(selection: string, noteTitle?: string): string {
  const lead = `What do my notes say about this passage${noteTitle ? ` (from ${noteTitle})` : ""}?\n\n`;
  let text = selection.trim().replace(/\n{3,}/g, "\n\n");
  const room = MAX_QUESTION - lead.length - 4; // the quotes and an ellipsis
  if (text.length > room) text = text.slice(0, room).trimEnd() + "…";
  return `${lead}"${text}"`;
}

/** The question "Ask about the current note" sends, with the note's path as the answer's only source
 * (`path` of /api/ask). */
export function noteQuestion(file: TFile): { question: string; options: AskOptions } {
  return { question: `What are the main points of ${file.basename}?`.slice(0, MAX_QUESTION), options: { path: file.path } };
}

export class ChatView extends ItemView {
  private messagesEl!: HTMLElement;
  private inputEl!: HTMLTextAreaElement;
  /** Follow-up questions continue this conversation (conversations belong to the key). */
  private conversationId = `obsidian-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

  constructor(
    leaf: WorkspaceLeaf,
    private readonly client: ApiClient,
  ) {
    super(leaf);
  }

  getViewType(): string {
    return CHAT_VIEW;
  }

  getDisplayText(): string {
    return "AI chat";
  }

  getIcon(): string {
    return "message-square";
  }

  async onOpen(): Promise<void> {
    const root = this.contentEl;
    root.empty();
    root.addClass("oaa-chat");
    this.messagesEl = root.createDiv({ cls: "oaa-messages" });
    const form = root.createDiv({ cls: "oaa-input" });
    this.inputEl = form.createEl("textarea", { attr: { placeholder: "Ask your notes…" } });
    const send = form.createEl("button", { text: "Ask" });
    send.onclick = () => void this.submit();
    this.inputEl.addEventListener("keydown", (e: KeyboardEvent) => {
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        void this.submit();
      }
    });
    return Promise.resolve();
  }

  newConversation(): void {
    this.conversationId = `obsidian-${Date.now().toString(36)}`;
    this.messagesEl.empty();
  }

  /** `options`: filters of this question only (follow-ups are asked of the whole vault). */
  async submit(question = this.inputEl.value.trim(), options: AskOptions = {}): Promise<Answer | null> {
    if (!question) return null;
    this.inputEl.value = "";
    this.messagesEl.createDiv({ cls: "oaa-message oaa-user", text: question });
    const out = this.messagesEl.createDiv({ cls: "oaa-message oaa-assistant" });
    const body = out.createDiv();
    let text = "";
    try {
      const answer = await this.client.askStream(question, { ...options, conversation_id: this.conversationId }, (event) => {
        if (event.type === "token") {
          text += event.text;
          body.setText(text);
        } else if (event.type === "error" && event.recovered) {
          text = "";
          body.setText("");
        }
      });
      await this.renderAnswer(out, body, answer);
      return answer;
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      body.setText(`Could not answer: ${message}`);
      new Notice(`AI Agent: ${message}`);
      return null;
    }
  }

  async renderAnswer(out: HTMLElement, body: HTMLElement, answer: Answer): Promise<void> {
    body.empty();
    if (answer.declined) out.addClass("oaa-declined");
    await MarkdownRenderer.render(this.app, answer.text, body, "", this);
    if (answer.notice) out.createDiv({ cls: "oaa-citations", text: answer.notice });
    const { cited, heading } = citedBy(answer);
    if (cited.length) {
      const list = out.createDiv({ cls: "oaa-citations" });
      list.createSpan({ text: heading });
      for (const c of cited) this.citationLink(list, c);
    }
    const actions = out.createDiv({ cls: "oaa-actions" });
    const copy = actions.createEl("button", { text: "Copy" });
    copy.onclick = () => void navigator.clipboard.writeText(answer.text);
    const insert = actions.createEl("button", { text: "Insert at cursor", attr: { "aria-label": "Insert the answer, with links to its sources, into the note at the cursor" } });
    insert.onclick = () => void this.insertAtCursor(answer);
    if (cited.length) {
      const open = actions.createEl("button", { text: "Open all sources", attr: { "aria-label": "Open every cited note at its heading, each in a tab" } });
      open.onclick = () => void this.openAllSources(answer);
    }
  }

  private citationLink(parent: HTMLElement, c: Citation): void {
    const a = parent.createEl("a", { text: citationLabel(c), href: "#" });
    a.onclick = (e: MouseEvent) => {
      e.preventDefault();
      void this.openCitation(c);
    };
  }

  openCitation(c: Citation): Promise<void> {
    return openCitation(this.app.workspace, c);
  }

  /** Every cited note at its heading (or PDF at its page), each in a tab of its own. */
  openAllSources(answer: Answer): Promise<number> {
    return openAllCitations(this.app.workspace, citedBy(answer).cited);
  }

  /** The note editor an answer goes into. Clicking the pane's button makes the pane the active leaf, so
   * the editor is the active view's, else the one of the main area's most recent leaf. */
  private noteEditor(): MarkdownView | null {
    const { workspace } = this.app;
    const active = workspace.getActiveViewOfType(MarkdownView);
    if (active) return active;
    const recent = workspace.getMostRecentLeaf()?.view;
    return recent instanceof MarkdownView ? recent : null;
  }

  /** The answer's Markdown, its sources as links to the notes, into the note at the cursor (replacing a
   * selection, as a paste does); false, with a notice, when no note is open in an editor. */
  insertAtCursor(answer: Answer): boolean {
    const view = this.noteEditor();
    if (!view) {
      new Notice("AI Agent: open a note to insert the answer into, put the cursor where it goes, then insert it again.");
      return false;
    }
    const { cited, heading } = citedBy(answer);
    const editor = view.editor;
    // Mid-line, the answer starts a paragraph of its own.
    const lead = editor.getCursor("from").ch > 0 ? "\n\n" : "";
    editor.replaceSelection(lead + answerMarkdown(this.app, answer.text, cited, view.file?.path ?? "", heading));
    new Notice(`AI Agent: the answer was inserted into ${view.file?.basename ?? "the note"}.`);
    return true;
  }
}
