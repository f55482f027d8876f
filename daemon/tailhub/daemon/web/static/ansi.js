// A terminal's rendering of a log, for the page: bytes in (a streaming UTF-8 decoder, so a
// character split over two chunks comes out whole and an invalid byte as U+FFFD), whole lines
// out, each a list of styled segments; renderLine() turns one into DOM nodes.
//
// Written here rather than vendored so that it is escape-safe by construction: text only ever
// reaches the DOM through createTextNode/textContent, a colour through the CSSOM or a class,
// and a link's address only after it parsed as http(s). Nothing here builds HTML from text.
//
// What it understands: SGR (16, 256 and 24-bit colours; bold, dim, italic, underline,
// strikethrough, inverse; resets), a carriage return and backspace (the line is rewritten in
// place, as a terminal does: a progress bar shows its last state, `\r\n` ends a line), the
// cursor moves within a line (CHA `G`, CUF `C`, CUB `D`; never past the line's end), erase in
// line (`K`), and OSC 8 hyperlinks. Every other escape sequence, and every other control
// character, is dropped.

// Longest line kept whole; a longer one is cut in pieces, as the CLI does with 1 MiB.
export const MAX_LINE = 1024 * 1024;
// An escape sequence longer than these is dropped whole (it cannot swallow the log).
const MAX_CSI = 64;
const MAX_OSC = 4096;

// Controls that end a run of plain text: C0 but the tab, DEL and C1.
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f]/g;

const TEXT = 0;
const ESC = 1;
const CSI = 2;
const OSC = 3;
const OSC_ESC = 4;
const SKIP = 5; // DCS, SOS, PM, APC: a string until ST, dropped
const SKIP_ESC = 6;
const NF = 7; // ESC, intermediates, final: dropped

// Marks for "the default colour of the other plane" (inverse video with default colours).
export const DEFAULT_FG = "default-fg";
export const DEFAULT_BG = "default-bg";

const PLAIN = Object.freeze({
  fg: null, bg: null, bold: false, dim: false, italic: false,
  underline: false, strike: false, inverse: false,
});

function styleKey(style) {
  if (style === PLAIN) return "";
  return [style.fg, style.bg, style.bold, style.dim, style.italic, style.underline,
    style.strike, style.inverse].join("|");
}

// xterm's 256-colour palette beyond the 16 named ones: a 6x6x6 cube, then 24 greys.
const CUBE = [0, 95, 135, 175, 215, 255];
export function colour256(n) {
  if (n < 16) return n;
  if (n < 232) {
    const i = n - 16;
    return `rgb(${CUBE[Math.floor(i / 36)]}, ${CUBE[Math.floor(i / 6) % 6]}, ${CUBE[i % 6]})`;
  }
  const grey = 8 + (n - 232) * 10;
  return `rgb(${grey}, ${grey}, ${grey})`;
}

// SGR parameters: `;`-separated, each maybe with `:` sub-parameters (38:2::R:G:B).
function parseParams(text) {
  if (text === "") return [[0]];
  return text.split(";").map((part) => part.split(":").map((n) => (n === "" ? 0 : Number(n))));
}

// The colour an extended colour sequence (38/48) names, and how many parameters it used.
function extendedColour(params, at) {
  const head = params[at];
  if (head.length > 1) {
    // Colon form: 38:5:N or 38:2:[CS]:R:G:B (the colour space id is optional).
    if (head[1] === 5 && head.length >= 3) return [byte(head[2]) ?? null, 1, true];
    if (head[1] === 2 && head.length >= 5) {
      const rgb = head.length >= 6 ? head.slice(3, 6) : head.slice(2, 5);
      return [rgbText(rgb), 1, true];
    }
    return [null, 1, false];
  }
  const kind = params[at + 1]?.[0];
  if (kind === 5 && at + 2 < params.length) {
    const n = byte(params[at + 2][0]);
    return [n === null ? null : colour256(n), 3, n !== null];
  }
  if (kind === 2 && at + 4 < params.length) {
    const rgb = [params[at + 2][0], params[at + 3][0], params[at + 4][0]];
    return [rgbText(rgb), 5, true];
  }
  return [null, params.length - at, false]; // malformed: the rest of the sequence is ignored
}

function byte(n) {
  return Number.isInteger(n) && n >= 0 && n <= 255 ? n : null;
}

function rgbText(values) {
  const [r, g, b] = values.map(byte);
  return r === null || g === null || b === null ? null : `rgb(${r}, ${g}, ${b})`;
}

// A new style after the SGR parameters `text`.
export function applySgr(style, text) {
  const params = parseParams(text);
  const next = { ...style };
  for (let i = 0; i < params.length; i++) {
    const code = params[i][0];
    if (code === 0) Object.assign(next, PLAIN);
    else if (code === 1) next.bold = true;
    else if (code === 2) next.dim = true;
    else if (code === 3) next.italic = true;
    else if (code === 4) next.underline = params[i][1] !== 0;
    else if (code === 7) next.inverse = true;
    else if (code === 9) next.strike = true;
    else if (code === 21) next.underline = true;
    else if (code === 22) { next.bold = false; next.dim = false; }
    else if (code === 23) next.italic = false;
    else if (code === 24) next.underline = false;
    else if (code === 27) next.inverse = false;
    else if (code === 29) next.strike = false;
    else if (code >= 30 && code <= 37) next.fg = code - 30;
    else if (code === 39) next.fg = null;
    else if (code >= 40 && code <= 47) next.bg = code - 40;
    else if (code === 49) next.bg = null;
    else if (code >= 90 && code <= 97) next.fg = code - 90 + 8;
    else if (code >= 100 && code <= 107) next.bg = code - 100 + 8;
    else if (code === 38 || code === 48) {
      const [colour, used, ok] = extendedColour(params, i);
      if (ok) next[code === 38 ? "fg" : "bg"] = colour;
      i += used - 1;
    }
  }
  return styleKey(next) === styleKey(PLAIN) ? PLAIN : Object.freeze(next);
}

// A link target the page may follow: an absolute http(s) URL, as the URL parser reads it.
export function safeLink(text) {
  if (text.length > 2048) return null;
  let url;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
}

// One line being written: segments of text with one style and link each, and a cursor.
class Line {
  constructor() {
    this.segs = [];
    this.length = 0; // UTF-16 code units
    this.col = 0;
  }

  write(text, style, link) {
    if (this.col === this.length) {
      const last = this.segs[this.segs.length - 1];
      if (last && last.style === style && last.link === link) last.text += text;
      else this.segs.push({ text, style, link });
      this.length += text.length;
      this.col = this.length;
      return;
    }
    const end = this.col + text.length;
    this.replace(this.col, end, [{ text, style, link }]);
    this.col = end;
  }

  // Segments covering [from, to) replaced by `middle`.
  replace(from, to, middle) {
    const head = cut(this.segs, 0, from);
    const tail = cut(this.segs, to, this.length);
    this.segs = merge([...head, ...middle, ...tail]);
    this.length = this.segs.reduce((sum, seg) => sum + seg.text.length, 0);
  }

  moveTo(col) {
    this.col = Math.max(0, Math.min(col, this.length));
  }

  erase(mode) {
    if (mode === 0) this.replace(this.col, this.length, []);
    else if (mode === 1) {
      this.replace(0, this.col, [{ text: " ".repeat(this.col), style: PLAIN, link: null }]);
    } else if (mode === 2) {
      this.segs = [];
      this.length = 0;
      this.col = 0;
    }
  }

  get empty() {
    return this.length === 0;
  }

  get text() {
    return this.segs.map((seg) => seg.text).join("");
  }
}

function cut(segs, from, to) {
  const out = [];
  let at = 0;
  for (const seg of segs) {
    const end = at + seg.text.length;
    if (end > from && at < to) {
      out.push({ ...seg, text: seg.text.slice(Math.max(from - at, 0), Math.min(to, end) - at) });
    }
    at = end;
    if (at >= to) break;
  }
  return out;
}

function merge(segs) {
  const out = [];
  for (const seg of segs) {
    if (seg.text === "") continue;
    const last = out[out.length - 1];
    if (last && last.style === seg.style && last.link === seg.link) last.text += seg.text;
    else out.push({ ...seg });
  }
  return out;
}

// A log's bytes as whole lines: push() takes the next bytes and returns the lines they
// complete (each an array of {text, style, link}); `partial` is the line still being written.
export class AnsiStream {
  constructor() {
    this.decoder = new TextDecoder("utf-8"); // fatal: false, so bad bytes become U+FFFD
    this.state = TEXT;
    this.buffer = "";
    this.overflow = false;
    this.style = PLAIN;
    this.link = null;
    this.line = new Line();
    this.done = [];
  }

  push(bytes) {
    this.feed(this.decoder.decode(bytes, { stream: true }));
    return this.take();
  }

  // The last bytes: the decoder's held-back bytes (an unfinished character) become U+FFFD.
  finish() {
    this.feed(this.decoder.decode());
    const lines = this.take();
    if (!this.line.empty) {
      lines.push(this.line.segs);
      this.line = new Line();
    }
    return lines;
  }

  get partial() {
    return this.line.empty ? null : this.line.segs;
  }

  take() {
    const lines = this.done;
    this.done = [];
    return lines;
  }

  endLine() {
    this.done.push(this.line.segs);
    this.line = new Line();
  }

  text(run) {
    let rest = run;
    while (this.line.length + rest.length > MAX_LINE) {
      const room = Math.max(MAX_LINE - this.line.length, 0);
      this.line.write(rest.slice(0, room), this.style, this.link);
      rest = rest.slice(room);
      this.endLine();
    }
    if (rest) this.line.write(rest, this.style, this.link);
  }

  feed(s) {
    let i = 0;
    while (i < s.length) {
      if (this.state === TEXT) {
        CONTROL.lastIndex = i;
        const found = CONTROL.exec(s);
        const j = found ? found.index : s.length;
        if (j > i) this.text(s.slice(i, j));
        if (!found) return;
        this.control(s.charCodeAt(j));
        i = j + 1;
      } else {
        i = this.escape(s, i);
      }
    }
  }

  control(code) {
    if (code === 0x0a) this.endLine();
    else if (code === 0x0d) this.line.moveTo(0);
    else if (code === 0x08) this.line.moveTo(this.line.col - 1);
    else if (code === 0x1b) this.state = ESC;
    // every other control is dropped
  }

  // One character of an escape sequence; returns where to go on (the same place to read a
  // character again as text when it broke the sequence).
  escape(s, i) {
    const c = s[i];
    const code = s.charCodeAt(i);
    switch (this.state) {
      case ESC:
        this.buffer = "";
        this.overflow = false;
        if (c === "[") this.state = CSI;
        else if (c === "]") this.state = OSC;
        else if (c === "P" || c === "X" || c === "^" || c === "_") this.state = SKIP;
        else if (code >= 0x20 && code <= 0x2f) this.state = NF;
        else if (code < 0x20) {
          this.state = TEXT; // a control breaks the sequence and is acted on
          return i;
        } else this.state = TEXT; // a two-character escape: dropped
        return i + 1;
      case CSI:
        if (code >= 0x40 && code <= 0x7e) {
          this.state = TEXT;
          if (!this.overflow) this.csi(this.buffer, c);
        } else if (code >= 0x20 && code <= 0x3f) {
          if (this.buffer.length < MAX_CSI) this.buffer += c;
          else this.overflow = true;
        } else {
          this.state = TEXT;
          return i;
        }
        return i + 1;
      case OSC:
      case SKIP:
        if (code === 0x07) this.endString();
        else if (code === 0x1b) this.state = this.state === OSC ? OSC_ESC : SKIP_ESC;
        else if (code === 0x0a) {
          // An unterminated string does not swallow the log: the newline ends it.
          this.state = TEXT;
          return i;
        } else if (this.state === OSC) {
          if (this.buffer.length < MAX_OSC) this.buffer += c;
          else this.overflow = true;
        }
        return i + 1;
      case OSC_ESC:
      case SKIP_ESC:
        if (c === "\\") {
          this.state = this.state === OSC_ESC ? OSC : SKIP;
          this.endString();
          return i + 1;
        }
        this.state = ESC; // a new escape sequence begins
        return i;
      case NF:
        if (code >= 0x30 && code <= 0x7e) this.state = TEXT;
        else if (code < 0x20 || code > 0x7e) {
          this.state = TEXT;
          return i;
        }
        return i + 1;
      default:
        this.state = TEXT;
        return i;
    }
  }

  endString() {
    if (this.state === OSC && !this.overflow) this.osc(this.buffer);
    this.state = TEXT;
  }

  csi(params, final) {
    // Private sequences (`ESC[?25l`, hide the cursor) and intermediates change nothing here.
    if (!/^[0-9;:]*$/.test(params)) return;
    const n = Number(params.split(";")[0] || "0");
    if (final === "m") this.style = applySgr(this.style, params);
    else if (final === "K") this.line.erase(n);
    else if (final === "G") this.line.moveTo(Math.max(n, 1) - 1);
    else if (final === "C") this.line.moveTo(this.line.col + Math.max(n, 1));
    else if (final === "D") this.line.moveTo(this.line.col - Math.max(n, 1));
  }

  osc(body) {
    // OSC 8 ; params ; URI: a hyperlink from here on, ended by an empty URI.
    if (!body.startsWith("8;")) return;
    const split = body.indexOf(";", 2);
    if (split < 0) return;
    const uri = body.slice(split + 1);
    this.link = uri === "" ? null : safeLink(uri);
  }
}

// A segment's node: plain text as a text node; styled text in a span whose colours are
// classes (the 16 named ones, from app.css) or CSSOM properties (256 and 24-bit ones).
function segmentNode(seg) {
  const style = seg.style;
  if (style === PLAIN) return document.createTextNode(seg.text);
  const span = document.createElement("span");
  span.textContent = seg.text;
  let fg = style.fg;
  let bg = style.bg;
  if (style.inverse) {
    fg = style.bg ?? DEFAULT_BG;
    bg = style.fg ?? DEFAULT_FG;
  }
  if (typeof fg === "number") span.classList.add(`ansi-fg-${fg}`);
  else if (fg === DEFAULT_BG) span.classList.add("ansi-fg-inverse");
  else if (fg) span.style.color = fg;
  if (typeof bg === "number") span.classList.add(`ansi-bg-${bg}`);
  else if (bg === DEFAULT_FG) span.classList.add("ansi-bg-inverse");
  else if (bg) span.style.backgroundColor = bg;
  for (const flag of ["bold", "dim", "italic", "underline", "strike"]) {
    if (style[flag]) span.classList.add(`ansi-${flag}`);
  }
  return span;
}

// The nodes of a line's segments, appended to `parent`; runs with one link share an <a>.
export function appendSegments(parent, segs) {
  let anchor = null;
  let link = null;
  for (const seg of segs) {
    if (seg.link === null) {
      anchor = null;
      link = null;
      parent.append(segmentNode(seg));
      continue;
    }
    if (anchor === null || link !== seg.link) {
      link = seg.link;
      anchor = document.createElement("a");
      anchor.href = seg.link; // checked by safeLink: http(s) only
      anchor.rel = "noopener noreferrer";
      anchor.target = "_blank";
      parent.append(anchor);
    }
    anchor.append(segmentNode(seg));
  }
}

// One line as a `div.line`.
export function renderLine(segs) {
  const div = document.createElement("div");
  div.className = "line";
  appendSegments(div, segs);
  return div;
}

export function lineText(segs) {
  return segs.map((seg) => seg.text).join("");
}
