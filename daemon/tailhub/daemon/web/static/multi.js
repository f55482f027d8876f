// Many jobs in one stream (/jobs?ids=3,4,5 or /jobs?name=GLOB), as `tailhub jobs logs -f 3 4 5`
// prints them: whole lines, each behind its job's prefix (`train-3 | `, labels padded to the
// longest), in the CLI's colours, in the order the jobs were named (by id for a glob).

import { AnsiStream, appendSegments } from "./ansi.js";
import { EventList, JOB_ID, base64Bytes, element, getJson, globRegExp, jobLabel, payload } from "./common.js";
import { Feed } from "./feed.js";
import { logView, setStreamState, showError } from "./job.js";

// The CLI's prefix colours (docker compose's order), as palette indexes: cyan, yellow, green,
// magenta, blue, then their bright forms (client/tailhub/client/_multi.py _COLOURS).
export const PREFIX_COLOURS = [6, 3, 2, 5, 4, 14, 11, 10, 13, 12];
// As many jobs as /api/events/logs serves.
const MAX_JOBS = 50;

function byIdAscending(a, b) {
  return a.id.length !== b.id.length ? a.id.length - b.id.length : (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

// The jobs to follow: [{id, name, found}], in the CLI's order.
async function targets(params) {
  if (params.has("ids")) {
    const ids = [...new Set(params.get("ids").split(",").map((id) => id.trim()).filter((id) => JOB_ID.test(id)))];
    return Promise.all(
      ids.slice(0, MAX_JOBS).map(async (id) => {
        try {
          const data = await getJson(`/api/jobs/${id}`);
          return { id, name: String(data?.job?.name ?? ""), found: true, state: data?.job?.state };
        } catch (error) {
          if (error.status === 404) return { id, name: "", found: false };
          throw error;
        }
      }),
    );
  }
  const glob = params.get("name") ?? "*";
  const matches = globRegExp(glob);
  const data = await getJson("/api/jobs");
  const jobs = Array.isArray(data?.jobs) ? data.jobs : [];
  return jobs
    .filter((job) => typeof job.id === "string" && JOB_ID.test(job.id) && matches.test(String(job.name ?? "")))
    .sort(byIdAscending)
    .slice(0, MAX_JOBS)
    .map((job) => ({ id: job.id, name: String(job.name ?? ""), found: true, state: job.state }));
}

export async function showMulti(params) {
  document.getElementById("multi-view").hidden = false;
  document.getElementById("log-area").hidden = false;
  document.body.classList.add("view-multi");
  const title = params.has("ids") ? `jobs ${params.get("ids")}` : `jobs named ${params.get("name") ?? "*"}`;
  document.getElementById("multi-title").textContent = title;
  document.getElementById("crumb").textContent = `/ ${title}`;
  let chosen;
  try {
    chosen = await targets(params);
  } catch (error) {
    showError(`Could not list the jobs: ${error.message}`);
    return;
  }
  follow(chosen);
}

function follow(chosen) {
  const view = logView();
  const events = new EventList(document.getElementById("events"));
  const list = document.getElementById("multi-jobs");
  const width = Math.max(0, ...chosen.map((t) => jobLabel(t.id, t.name).length));
  const jobs = new Map();
  chosen.forEach((target, index) => {
    const label = jobLabel(target.id, target.name);
    const colour = `ansi-fg-${PREFIX_COLOURS[index % PREFIX_COLOURS.length]}`;
    const item = element("li", "multi-job");
    item.dataset.id = target.id;
    const link = element("a", `prefix ${colour}`, label);
    link.href = `/jobs/${target.id}`;
    const state = element("span", "state", target.found ? (target.state ?? "") : "not found");
    item.append(link, " ", state);
    list.append(item);
    if (target.found) {
      jobs.set(target.id, { prefix: `${label.padEnd(width)} | `, colour, stream: new AnsiStream(), state, ended: false, next: null });
    }
  });
  if (jobs.size === 0) {
    setStreamState("ended", "no job to follow");
    showError("No job to follow.");
    return;
  }

  const line = (job, segs) => {
    const div = element("div", "line");
    div.append(element("span", `prefix ${job.colour}`, job.prefix));
    appendSegments(div, segs);
    return div;
  };
  const jobOf = (data) => (data !== null && typeof data.job === "string" ? jobs.get(data.job) : undefined);

  // Opened again after a hidden spell: the jobs not ended, each from its next byte, exactly
  // (see Feed; the stream's first chunk of each job, empty, says where it starts).
  const url = () => {
    const open = [...jobs].filter(([, job]) => !job.ended);
    const query = new URLSearchParams({ ids: open.map(([id]) => id).join(",") });
    const known = open.filter(([, job]) => job.next !== null);
    if (known.length) query.set("offsets", known.map(([id, job]) => `${id}:${job.next}`).join(","));
    return `/api/events/logs?${query}`;
  };
  const chunk = (event) => {
    const data = payload(event);
    const job = jobOf(data);
    if (job === undefined || job.ended || typeof data.data !== "string" || typeof data.offset !== "string") return;
    let bytes;
    let offset;
    try {
      offset = BigInt(data.offset);
      bytes = base64Bytes(data.data);
    } catch {
      return;
    }
    // Bytes shown already are dropped (never sent: the stream starts where asked).
    if (job.next !== null && offset < job.next) {
      const seen = job.next - offset;
      bytes = seen >= BigInt(bytes.length) ? bytes.subarray(bytes.length) : bytes.subarray(Number(seen));
      offset = job.next;
    }
    const end = offset + BigInt(bytes.length);
    if (job.next === null || end > job.next) job.next = end;
    view.append(job.stream.push(bytes).map((segs) => line(job, segs)));
  };
  const end = (event) => {
    const data = payload(event);
    const job = jobOf(data);
    if (job === undefined || job.ended) return;
    job.ended = true;
    // Its last line even without a newline: nothing more will complete it.
    view.append(job.stream.finish().map((segs) => line(job, segs)));
    const exit = data.exit_code === null || data.exit_code === undefined ? "" : ` (exit code ${data.exit_code})`;
    job.state.textContent = `${data.state ?? "?"}${exit}`;
    if ([...jobs.values()].every((each) => each.ended)) feed.close("ended", "every job ended");
  };
  const handlers = {
    chunk,
    end,
    event: (event) => {
      const data = payload(event);
      if (jobOf(data) !== undefined) events.add(data);
    },
    error: (event) => setStreamState("error", `error: ${payload(event)?.message ?? "unknown"}`),
  };
  const feed = new Feed(url, handlers, document.getElementById("stream-state"));
  feed.open();
}
