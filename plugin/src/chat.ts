import { ItemView, MarkdownRenderer, Notice, WorkspaceLeaf } from "obsidian";
import type { Answer, ApiClient, Citation } from "./api";
import { citationTarget } from "./citations";

export const CHAT_VIEW = "obsidian-ai-agent-chat";

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

  async submit(question = this.inputEl.value.trim()): Promise<Answer | null> {
    if (!question) return null;
    this.inputEl.value = "";
    this.messagesEl.createDiv({ cls: "oaa-message oaa-user", text: question });
    const out = this.messagesEl.createDiv({ cls: "oaa-message oaa-assistant" });
    const body = out.createDiv();
    let text = "";
    try {
      const answer = await this.client.askStream(question, { conversation_id: this.conversationId }, (event) => {
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
    const cited = answer.citations.length ? answer.citations : answer.declined ? answer.sources : [];
    if (cited.length) {
      const list = out.createDiv({ cls: "oaa-citations" });
      list.createSpan({ text: answer.declined ? "Closest notes:" : "Sources:" });
      for (const c of cited) this.citationLink(list, c);
    }
    const actions = out.createDiv({ cls: "oaa-actions" });
    const copy = actions.createEl("button", { text: "Copy" });
    copy.onclick = () => void navigator.clipboard.writeText(answer.text);
  }

  private citationLink(parent: HTMLElement, c: Citation): void {
    const where = c.kind === "pdf" && c.page ? `p. ${c.page}` : c.heading_path.join(" › ");
    const a = parent.createEl("a", { text: `[${c.n}] ${c.title}${where ? ` — ${where}` : ""}`, href: "#" });
    a.onclick = (e: MouseEvent) => {
      e.preventDefault();
      void this.openCitation(c);
    };
  }

  openCitation(c: Citation): Promise<void> {
    return this.app.workspace.openLinkText(citationTarget(c), "");
  }
}
