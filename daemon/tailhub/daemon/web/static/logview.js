// The log on screen: `#log` holds one `div.line` per line (the line being written last, as
// `div.line.partial`), at most `maxLines` of them (older ones dropped, with a note). It follows
// the end while scrolled to the bottom; scrolling up pauses that, and a "N new lines" button
// counts what arrived since and resumes. Search highlights matches by splitting text nodes into
// `mark.hit` elements (never through HTML).

import { renderLine } from "./ansi.js";

export const MAX_LINES = 100000;
// Highlights at most this many matches (the count still says how many there are).
const MAX_HITS = 10000;

export class LogView {
  constructor({ scroller, log, newLines, dropped, search, searchCount, maxLines = MAX_LINES }) {
    this.scroller = scroller;
    this.log = log;
    this.newLines = newLines;
    this.dropped = dropped;
    this.maxLines = maxLines;
    this.droppedCount = 0;
    this.lineCount = 0;
    this.partial = null;
    this.following = true;
    this.unseen = 0;
    this.search = new Search(log, search, searchCount);
    scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
    newLines.addEventListener("click", () => this.resume());
  }

  clear() {
    this.log.replaceChildren();
    this.lineCount = 0;
    this.partial = null;
    this.droppedCount = 0;
    this.unseen = 0;
    this.dropped.hidden = true;
    this.newLines.hidden = true;
    this.following = true;
    this.search.reset();
  }

  // Whole lines (DOM nodes from renderLine, or prefixed ones) below the others.
  append(nodes) {
    if (nodes.length === 0) return;
    const fragment = document.createDocumentFragment();
    for (const node of nodes) {
      this.search.highlight(node);
      fragment.append(node);
    }
    this.log.insertBefore(fragment, this.partial);
    this.lineCount += nodes.length;
    this.trim();
    if (this.following) this.toBottom();
    else {
      this.unseen += nodes.length;
      this.newLines.textContent = `${this.unseen} new line${this.unseen === 1 ? "" : "s"}`;
      this.newLines.hidden = false;
    }
  }

  // A note between the lines (`div.note`, not a line of the log).
  note(text) {
    const node = document.createElement("div");
    node.className = "note";
    node.textContent = text;
    this.log.insertBefore(node, this.partial);
    this.lineCount += 1;
    this.trim();
  }

  // The line still being written (segments, or null): shown last, replaced as it changes.
  setPartial(segs) {
    const node = segs === null ? null : renderLine(segs);
    if (node !== null) {
      node.classList.add("partial");
      this.search.highlight(node);
    }
    if (this.partial !== null) {
      this.search.forget(this.partial);
      this.partial.remove();
    }
    this.partial = node;
    if (node !== null) this.log.append(node);
    if (this.following) this.toBottom();
  }

  // The DOM stays bounded: the oldest lines go, and a note says how many.
  trim() {
    const excess = this.lineCount - this.maxLines;
    if (excess <= 0) return;
    for (let i = 0; i < excess; i++) {
      const first = this.log.firstElementChild;
      this.search.forget(first);
      first.remove();
    }
    this.lineCount -= excess;
    this.droppedCount += excess;
    this.dropped.textContent = `${this.droppedCount} earlier line${this.droppedCount === 1 ? "" : "s"} dropped from the page (download the log for all of it)`;
    this.dropped.hidden = false;
  }

  atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 4;
  }

  onScroll() {
    const bottom = this.atBottom();
    if (bottom === this.following) return;
    this.following = bottom;
    this.scroller.dataset.following = String(bottom);
    if (bottom) {
      this.unseen = 0;
      this.newLines.hidden = true;
    }
  }

  toBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  resume() {
    this.following = true;
    this.scroller.dataset.following = "true";
    this.unseen = 0;
    this.newLines.hidden = true;
    this.toBottom();
  }
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

// Search in the loaded log: every match in `mark.hit`, the chosen one also `.current`.
class Search {
  constructor(log, input, count) {
    this.log = log;
    this.input = input;
    this.count = count;
    this.pattern = null;
    this.hits = 0;
    this.current = -1;
    this.timer = null;
    input.addEventListener("input", () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.apply(input.value), 150);
    });
    input.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      clearTimeout(this.timer);
      if (this.input.value !== this.query) this.apply(this.input.value);
      else this.step(event.shiftKey ? -1 : 1);
    });
  }

  reset() {
    this.hits = 0;
    this.current = -1;
    this.show();
  }

  apply(query) {
    this.query = query;
    for (const mark of this.log.querySelectorAll("mark.hit")) unwrap(mark);
    this.log.normalize();
    this.hits = 0;
    this.current = -1;
    this.pattern = query ? new RegExp(escapeRegExp(query), "giu") : null;
    if (this.pattern !== null) {
      for (const line of this.log.children) this.highlight(line);
    }
    this.show();
    if (this.hits > 0) this.step(1);
  }

  step(direction) {
    const marks = this.log.querySelectorAll("mark.hit");
    if (marks.length === 0) return;
    marks[this.current]?.classList.remove("current");
    this.current = (this.current + direction + marks.length) % marks.length;
    const mark = marks[this.current];
    mark.classList.add("current");
    mark.scrollIntoView({ block: "center" });
    this.show();
  }

  show() {
    if (this.pattern === null) this.count.textContent = "";
    else if (this.hits === 0) this.count.textContent = "no match";
    else {
      const at = this.current >= 0 ? `${this.current + 1} of ` : "";
      this.count.textContent = `${at}${this.hits} match${this.hits === 1 ? "" : "es"}`;
    }
    this.count.dataset.hits = String(this.hits);
  }

  // A line leaves the page: its matches no longer count.
  forget(line) {
    if (this.pattern === null) return;
    const gone = line.querySelectorAll("mark.hit").length;
    if (gone) {
      this.hits -= gone;
      this.current = -1;
      this.show();
    }
  }

  // Marks the matches in one line; a match may cross styled spans (each piece is marked).
  highlight(line) {
    if (this.pattern === null) return;
    const nodes = [];
    const walker = document.createTreeWalker(line, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node !== null; node = walker.nextNode()) nodes.push(node);
    const text = nodes.map((node) => node.data).join("");
    const ranges = [];
    this.pattern.lastIndex = 0;
    for (const match of text.matchAll(this.pattern)) {
      if (match[0].length === 0) break;
      ranges.push([match.index, match.index + match[0].length]);
    }
    if (ranges.length === 0) return;
    this.hits += ranges.length;
    if (this.hits - ranges.length >= MAX_HITS) {
      this.show();
      return;
    }
    // Each text node's share of each match, marked from its end so that offsets hold.
    let start = 0;
    for (const node of nodes) {
      const end = start + node.data.length;
      const mine = ranges.filter(([a, b]) => a < end && b > start);
      for (const [a, b] of mine.reverse()) {
        const from = Math.max(a, start) - start;
        const to = Math.min(b, end) - start;
        if (to < node.data.length) node.splitText(to);
        const middle = from > 0 ? node.splitText(from) : node;
        const mark = document.createElement("mark");
        mark.className = "hit";
        middle.replaceWith(mark);
        mark.append(middle);
      }
      start = end;
    }
    this.show();
  }
}

function unwrap(mark) {
  mark.replaceWith(...mark.childNodes);
}
