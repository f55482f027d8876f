// An event stream that a hidden tab lets go of.
//
// Over HTTP/1.1 a browser opens at most 6 connections to one host, and every open stream keeps
// one: a seventh tab on the daemon would not even load. So a tab lets go of its stream while
// hidden and opens it again when shown, from where it was: a new EventSource cannot send
// Last-Event-ID, so the view's `url()` puts its next offset in the query (`offset=`,
// `offsets=`) and the daemon starts exactly there (no gap, no repeat). The browser's own
// reconnects (a daemon restart) resume with Last-Event-ID, which the daemon prefers.

// How long a tab may stay hidden before it lets go (switching tabs back and forth costs
// nothing).
const HIDDEN_GRACE_MS = 2000;

export class Feed {
  // `url()` is asked at every open; `handlers` maps event names to functions of the parsed
  // event; `status` is the element saying the stream's state (`data-state`, and
  // `data-connections`: how many times it was opened).
  constructor(url, handlers, status) {
    this.url = url;
    this.handlers = handlers;
    this.status = status;
    this.source = null;
    this.done = false;
    this.suspended = false;
    this.timer = null;
    this.opens = 0;
    document.addEventListener("visibilitychange", () => this.visibility());
  }

  state(state, text) {
    this.status.dataset.state = state;
    this.status.textContent = text;
  }

  open() {
    this.source?.close();
    this.done = false;
    this.suspended = false;
    const source = new EventSource(this.url());
    this.source = source;
    this.state("connecting", "connecting");
    source.addEventListener("open", () => {
      this.opens += 1;
      this.status.dataset.connections = String(this.opens);
      this.state("live", "following live");
    });
    for (const [name, handler] of Object.entries(this.handlers)) {
      if (name !== "error") source.addEventListener(name, (event) => handler(event));
    }
    source.addEventListener("error", (event) => {
      if (event.data !== undefined) {
        // The daemon's own `error` event (unknown job, bad pattern): said, and the end.
        this.close("error", "error");
        this.handlers.error?.(event);
        return;
      }
      if (source.readyState === EventSource.CLOSED) {
        this.close("closed", "disconnected: reload the page (or run `tailhub web` again)");
      } else this.state("reconnecting", "reconnecting");
    });
  }

  // For good (an `end`, an error): the browser must not reconnect.
  close(state, text) {
    this.done = true;
    clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
    this.state(state, text);
  }

  visibility() {
    if (this.done) return;
    clearTimeout(this.timer);
    if (document.visibilityState === "hidden") {
      this.timer = setTimeout(() => {
        if (this.done || this.source === null) return;
        this.source.close();
        this.source = null;
        this.suspended = true;
        this.state("suspended", "paused while the tab is hidden");
      }, HIDDEN_GRACE_MS);
    } else if (this.suspended) {
      this.open();
    }
  }
}
