// One job's page (/jobs/ID): its record and events, then its log: the last 1000 lines, then
// live from /api/events/jobs/ID/log. A dropped connection (a daemon restart) is resumed by the
// browser with Last-Event-ID, the byte offset after the last chunk: no gap, no repeat. On
// `end` the page shows the final state and closes the stream (EventSource would reconnect).

import { AnsiStream, renderLine } from "./ansi.js";
import { EventList, base64Bytes, durationText, getJson, isTerminal, payload, sizeText, timeText } from "./common.js";
import { Feed } from "./feed.js";
import { LogView } from "./logview.js";

const TAIL_LINES = 1000;

export function logView() {
  return new LogView({
    scroller: document.getElementById("log-view"),
    log: document.getElementById("log"),
    newLines: document.getElementById("new-lines"),
    dropped: document.getElementById("dropped"),
    search: document.getElementById("search"),
    searchCount: document.getElementById("search-count"),
  });
}

export function setStreamState(state, text) {
  const status = document.getElementById("stream-state");
  status.dataset.state = state;
  status.textContent = text;
}

export function showError(text) {
  const error = document.getElementById("page-error");
  error.textContent = text;
  error.hidden = false;
}

// The header: name, state, exit code, reason, source, times, size.
class Header {
  constructor(id) {
    this.id = id;
    this.job = null;
    this.byId = (name) => document.getElementById(name);
    setInterval(() => this.tick(), 1000);
  }

  show(job) {
    this.job = job;
    document.title = `${job.name || `job ${job.id}`} · tailhub`;
    this.byId("job-id").textContent = `Job ${job.id}`;
    this.byId("job-name").textContent = job.name ?? "";
    this.state(job.state, job.exit_code, job.reason);
    const described = job.source_description && job.source_description !== job.source;
    this.byId("job-source").textContent = described ? `${job.source}: ${job.source_description}` : job.source;
    this.byId("job-submitted").textContent = timeText(job.submitted_at);
    this.byId("job-started").textContent = timeText(job.started_at);
    this.byId("job-size").textContent = sizeText(job.log_size);
    this.tick();
  }

  state(state, exitCode, reason) {
    const node = this.byId("job-state");
    node.textContent = state;
    node.className = `state state-${state}`;
    this.byId("job-exit").textContent = exitCode === null || exitCode === undefined ? "" : `exit code ${exitCode}`;
    this.byId("job-reason").textContent = reason ?? "";
  }

  tick() {
    if (this.job !== null) this.byId("job-duration").textContent = durationText(this.job);
  }
}

// Where the log starts and whether its chunks follow each other exactly: an overlap is
// dropped (never shown twice) and counted, a hole counted; tests read both. The stream's
// first chunk (empty) says where it starts.
class Offsets {
  constructor(log, filtered, view) {
    this.log = log;
    this.view = view;
    this.filtered = filtered;
    this.next = null;
    log.dataset.gaps = "0";
    log.dataset.repeats = "0";
    delete log.dataset.offset;
    delete log.dataset.start;
  }

  // The bytes of a chunk not seen yet (all of them but after a repeat).
  take(offset, bytes) {
    let fresh = bytes;
    if (this.next === null) {
      this.log.dataset.start = String(offset);
      const earlier = document.getElementById("earlier");
      earlier.hidden = offset === 0n;
      earlier.textContent = `The page starts ${offset} bytes into the log: download it for the earlier part.`;
    } else if (offset < this.next) {
      // The stream repeated itself (it starts where asked, after a hidden spell too).
      this.count("repeats");
      const seen = this.next - offset;
      fresh = seen >= BigInt(bytes.length) ? bytes.subarray(bytes.length) : bytes.subarray(Number(seen));
    } else if (offset > this.next && !this.filtered) {
      this.count("gaps");
      this.view.note(`(${offset - this.next} bytes not shown here: download the log for them)`);
    }
    const end = offset + BigInt(bytes.length);
    if (this.next === null || end > this.next) this.next = end;
    this.log.dataset.offset = String(this.next);
    return fresh;
  }

  count(what) {
    this.log.dataset[what] = String(Number(this.log.dataset[what]) + 1);
  }
}

export function showJob(id, params) {
  document.getElementById("job-view").hidden = false;
  document.getElementById("log-area").hidden = false;
  document.body.classList.add("view-job");
  document.getElementById("crumb").textContent = `/ job ${id}`;
  const view = logView();
  const header = new Header(id);
  const events = new EventList(document.getElementById("events"));
  const log = document.getElementById("log");
  const ended = document.getElementById("ended");
  // The stream's `end`, which outranks a record read before it.
  let finished = null;

  const raw = `/api/jobs/${encodeURIComponent(id)}/raw`;
  document.getElementById("download-raw").href = raw;
  document.getElementById("download-gzip").href = `${raw}?gzip=1`;

  const refresh = async () => {
    try {
      const data = await getJson(`/api/jobs/${encodeURIComponent(id)}`);
      if (data === null || typeof data.job !== "object" || data.job === null) return;
      header.show(data.job);
      if (finished !== null && !isTerminal(data.job.state)) header.state(finished.state, finished.exit_code, finished.reason);
      for (const event of Array.isArray(data.events) ? data.events : []) events.add(event);
    } catch (error) {
      showError(error.status === 404 ? `No job ${id}.` : `Could not read job ${id}: ${error.message}`);
    }
  };

  const grep = document.getElementById("grep");
  const exclude = document.getElementById("exclude");
  grep.value = params.get("grep") ?? "";
  exclude.value = params.get("exclude") ?? "";

  let feed = null;
  const connect = () => {
    feed?.close("closed", "closed");
    view.clear();
    ended.hidden = true;
    finished = null;
    const stream = new AnsiStream();
    const filtered = Boolean(grep.value || exclude.value);
    const offsets = new Offsets(log, filtered, view);
    log.dataset.filtered = String(filtered);
    // Opened again after a hidden spell: from the next byte, exactly (see Feed).
    const url = () => {
      const query = new URLSearchParams({ tail_lines: String(TAIL_LINES) });
      if (offsets.next !== null) query.set("offset", String(offsets.next));
      if (grep.value) query.append("grep", grep.value);
      if (exclude.value) query.append("exclude", exclude.value);
      return `/api/events/jobs/${encodeURIComponent(id)}/log?${query}`;
    };
    const chunk = (event) => {
      const data = payload(event);
      if (data === null || typeof data.offset !== "string" || typeof data.data !== "string") return;
      let offset;
      let bytes;
      try {
        offset = BigInt(data.offset);
        bytes = base64Bytes(data.data);
      } catch {
        return;
      }
      const fresh = offsets.take(offset, bytes);
      view.append(stream.push(fresh).map(renderLine));
      view.setPartial(stream.partial);
    };
    const end = (event) => {
      view.append(stream.finish().map(renderLine));
      view.setPartial(null);
      const data = payload(event) ?? {};
      finished = data;
      feed.close("ended", `ended: ${data.state ?? "?"}`);
      const exit = data.exit_code === null || data.exit_code === undefined ? "" : `, exit code ${data.exit_code}`;
      ended.textContent = `Ended: ${data.state ?? "?"}${exit}${data.reason ? ` (${data.reason})` : ""}`;
      ended.dataset.state = String(data.state ?? "");
      ended.hidden = false;
      header.state(data.state, data.exit_code, data.reason);
      if (typeof data.log_size === "string") document.getElementById("job-size").textContent = sizeText(data.log_size);
      refresh();
    };
    const handlers = {
      chunk,
      end,
      event: (event) => {
        const data = payload(event);
        if (data !== null) events.add(data);
      },
      error: (event) => setStreamState("error", `error: ${payload(event)?.message ?? "unknown"}`),
    };
    feed = new Feed(url, handlers, document.getElementById("stream-state"));
    feed.open();
  };

  document.getElementById("filter-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    if (grep.value) query.set("grep", grep.value);
    if (exclude.value) query.set("exclude", exclude.value);
    const search = query.toString();
    history.replaceState(null, "", `${location.pathname}${search ? `?${search}` : ""}`);
    connect();
  });

  refresh();
  connect();
}
