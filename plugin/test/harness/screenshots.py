"""Opens the views harness in headless Chromium, asks the chat pane a question (and inserts the answer
into the open note and opens all its sources) and searches in the search modal, and writes chat.png and
search.png to the folder given; prints what it saw as JSON.

Usage: python screenshots.py <page url> <out dir> [chromium executable]
"""

import json
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

QUESTION = "How do I make a task repeat every week?"
SEARCH = 'folder:"Getting Started" due date'


def main() -> None:
    url, out = sys.argv[1], Path(sys.argv[2])
    exe = sys.argv[3] if len(sys.argv) > 3 else "/usr/bin/chromium"
    seen: dict[str, object] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--headless=new"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function("window.harness && window.harness.ready", timeout=10_000)

        # The chat pane: the answer's text grows while it streams, then is rendered with its sources.
        # Every change of the answer's text is recorded in the page as it is painted.
        page.evaluate(
            """() => { window.lengths = [];
               const box = document.querySelector('.oaa-messages');
               new MutationObserver(() => { const a = box.querySelector('.oaa-assistant');
                 const n = a ? a.textContent.length : 0;
                 if (n && window.lengths[window.lengths.length - 1] !== n) window.lengths.push(n); })
                 .observe(box, { childList: true, subtree: true, characterData: true }); }"""
        )
        page.fill(".oaa-input textarea", QUESTION)
        page.press(".oaa-input textarea", "Enter")
        page.wait_for_selector(".oaa-assistant .oaa-actions", timeout=40_000)
        seen["answer_lengths_while_streaming"] = page.evaluate("window.lengths")
        seen["answer"] = page.inner_text(".oaa-assistant > div:first-child")
        seen["citations"] = page.eval_on_selector_all(".oaa-assistant .oaa-citations a", "els => els.map(e => e.textContent)")
        seen["actions"] = page.eval_on_selector_all(".oaa-assistant .oaa-actions button", "els => els.map(e => e.textContent)")

        # The answer's actions: inserted into the note open in the main area (drawn there for the
        # screenshot), and every source opened in a tab.
        page.click(".oaa-assistant .oaa-actions button:text-is('Insert at cursor')")
        seen["inserted"] = page.evaluate("window.harness.note()")
        page.evaluate("window.harness.showNote()")
        if "Open all sources" in seen["actions"]:
            page.click(".oaa-assistant .oaa-actions button:text-is('Open all sources')")
            page.wait_for_function("window.harness.opened.length > 0", timeout=5_000)
        seen["opened_all"] = page.evaluate("window.harness.opened.slice()")
        page.screenshot(path=str(out / "chat.png"))
        if seen["citations"]:
            page.click(".oaa-assistant .oaa-citations a")
        seen["opened_from_chat"] = page.evaluate("window.harness.opened.slice(-1).map(o => o.linktext)")

        # The search modal: results as you type, ↓ and Ctrl+↵ to open one in a new pane.
        page.evaluate("window.harness.openSearch()")
        page.type(".prompt-input", SEARCH, delay=15)
        page.wait_for_selector(".suggestion-item", timeout=15_000)
        page.wait_for_timeout(150)
        seen["results"] = page.eval_on_selector_all(
            ".suggestion-item", "els => els.map(e => [...e.children].map(c => c.textContent))"
        )
        page.screenshot(path=str(out / "search.png"))
        page.press(".prompt-input", "ArrowDown")
        page.press(".prompt-input", "Control+Enter")
        seen["opened_from_search"] = page.evaluate("window.harness.opened.slice(-1)[0]")
        seen["notices"] = page.evaluate("window.harness.notices")
        seen["page_errors"] = errors
        browser.close()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
