// What every view shares: formatting as the CLI does it, a glob as fnmatch reads it, the JSON
// API, and SSE payloads. No text from the daemon is ever parsed as HTML here or anywhere.

// A job id as the API spells it: a decimal string (64-bit).
export const JOB_ID = /^[0-9]{1,20}$/;

// `812B`, `3.4KiB`, `1.2MiB`, `5.0GiB` (the CLI's size_text).
export function sizeText(count) {
  let value = Number(count);
  for (const unit of ["B", "KiB", "MiB", "GiB"]) {
    if (value < 1024 || unit === "GiB") return unit === "B" ? `${value.toFixed(0)}B` : `${value.toFixed(1)}${unit}`;
    value /= 1024;
  }
  return String(count);
}

// `45s`, `3m 12s`, `2h 5m`, `3d 4h` (the CLI's span, its two largest units).
export function spanText(seconds, parts = 2) {
  let left = Math.max(Math.floor(seconds), 0);
  const units = [];
  for (const [size, unit] of [[86400, "d"], [3600, "h"], [60, "m"], [1, "s"]]) {
    if (left >= size || (size === 1 && units.length === 0)) {
      units.push(`${Math.floor(left / size)}${unit}`);
      left %= size;
    } else if (units.length) {
      units.push(`0${unit}`);
    }
    if (units.length === parts) break;
  }
  return units.join(" ");
}

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);

export function isTerminal(state) {
  return TERMINAL.has(state);
}

// How long a job ran: ended minus started, or now minus started while it runs.
export function durationText(job, now = Date.now() / 1000) {
  if (!job.started_at) return "-";
  const end = job.ended_at ?? (isTerminal(job.state) ? job.started_at : now);
  return spanText(end - job.started_at);
}

export function timeText(seconds) {
  if (!seconds) return "-";
  return new Date(seconds * 1000).toLocaleString();
}

// `train-12` (or `12` for a job without a name): the multi-job view's prefix, as the CLI's.
export function jobLabel(id, name) {
  return name ? `${printable(name)}-${id}` : String(id);
}

// Control characters shown as escapes (`\x1b`, `\n`), as the CLI's printable() does, so that a
// name can neither break a line apart nor look like something it is not.
export function printable(text) {
  return String(text).replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => {
    if (c === "\n") return "\\n";
    if (c === "\r") return "\\r";
    if (c === "\t") return "\\t";
    return `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`;
  });
}

// Whether `pattern` has glob characters (else a name filter is a substring).
export function isGlob(pattern) {
  return /[*?[]/.test(pattern);
}

// A glob as Python's fnmatch.fnmatchcase reads it, as a RegExp matching the whole name.
export function globRegExp(glob) {
  let out = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*") out += "[\\s\\S]*";
    else if (c === "?") out += "[\\s\\S]";
    else if (c === "[") {
      const close = glob.indexOf("]", glob[i + 1] === "!" || glob[i + 1] === "]" ? i + 2 : i + 1);
      if (close < 0) {
        out += "\\[";
        continue;
      }
      let body = glob.slice(i + 1, close);
      i = close;
      const negate = body.startsWith("!");
      if (negate) body = body.slice(1);
      body = body.replace(/[\\\]^]/g, (ch) => `\\${ch}`);
      out += negate ? `[^${body}]` : `[${body}]`;
    } else out += c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  }
  try {
    return new RegExp(`^(?:${out})$`, "u");
  } catch {
    return /(?!)/; // a glob that makes no pattern matches nothing
  }
}

// A name filter: a glob when it has glob characters, else a case-insensitive substring.
export function nameMatcher(pattern) {
  if (!pattern) return () => true;
  if (isGlob(pattern)) {
    const re = globRegExp(pattern);
    return (name) => re.test(name);
  }
  const needle = pattern.toLowerCase();
  return (name) => name.toLowerCase().includes(needle);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// GET an API path; the JSON body, or ApiError with the daemon's message.
export async function getJson(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return body;
}

// One SSE payload: a JSON object, or null when it is not one (never trusted further).
export function payload(event) {
  try {
    const value = JSON.parse(event.data);
    return value !== null && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

// A chunk's bytes from its base64 text.
export function base64Bytes(text) {
  if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(text);
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// An element with a class and text (set as text, never parsed).
export function element(tag, className = "", text = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null) node.textContent = text;
  return node;
}

// The events list: one `li.event` per source event, each once (the page's fetch and the
// stream may both carry it).
export class EventList {
  constructor(list) {
    this.list = list;
    this.seen = new Set();
  }

  add(event) {
    const key = `${event.offset}|${event.time}|${event.message}`;
    if (this.seen.has(key) || this.seen.size >= 10000) return;
    this.seen.add(key);
    const item = element("li", "event");
    if (event.job !== undefined) item.append(element("span", "event-job", `job ${event.job}`));
    item.append(element("time", "event-time", timeText(event.time)));
    item.append(element("span", "event-message", String(event.message ?? "")));
    this.list.append(item);
    this.list.hidden = false;
  }
}
