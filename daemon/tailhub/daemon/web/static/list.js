// The job list (/): every job from /api/events/jobs, updated in place as states, sizes,
// followers and exit codes change; filtered by name (substring or glob) and state.

import { Feed } from "./feed.js";
import { JOB_ID, durationText, element, isTerminal, nameMatcher, payload, sizeText } from "./common.js";

// Newest first: ids are decimal strings, compared as numbers of any size.
function newestFirst(a, b) {
  return a.id.length !== b.id.length ? b.id.length - a.id.length : (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

function stateMatcher(state) {
  if (!state) return () => true;
  if (state === "active") return (job) => !isTerminal(job.state);
  return (job) => job.state === state;
}

function jobLink(job, text) {
  const a = element("a", "", text);
  a.href = `/jobs/${job.id}`;
  return a;
}

// One job's row, its cells by class (tests and people read them).
function row(job) {
  const tr = element("tr");
  tr.dataset.id = job.id;
  tr.dataset.state = job.state;
  const cell = (className, content) => {
    const td = element("td", className);
    if (typeof content === "string") td.textContent = content;
    else td.append(content);
    tr.append(td);
  };
  cell("id", jobLink(job, job.id));
  cell("name", jobLink(job, job.name || "-"));
  cell("state", element("span", `state state-${job.state}`, job.state));
  const source = element("span", "", job.source);
  source.title = job.source_description ?? "";
  cell("source", source);
  cell("size num", sizeText(job.log_size));
  cell("followers num", String(job.followers));
  cell("exit num", job.exit_code === null || job.exit_code === undefined ? "-" : String(job.exit_code));
  cell("duration", durationText(job));
  return tr;
}

function validJob(job) {
  return job !== null && typeof job === "object" && typeof job.id === "string" && JOB_ID.test(job.id);
}

export function showList() {
  document.getElementById("list-view").hidden = false;
  document.body.classList.add("view-list");
  const body = document.querySelector("#jobs tbody");
  const nameInput = document.getElementById("filter-name");
  const stateInput = document.getElementById("filter-state");
  const status = document.getElementById("list-state");
  const count = document.getElementById("list-count");
  const followShown = document.getElementById("follow-shown");
  const jobs = new Map();

  const query = new URLSearchParams(location.search);
  nameInput.value = query.get("name") ?? "";
  stateInput.value = query.get("state") ?? "";

  let timer = null;
  const redraw = () => {
    timer = null;
    const byName = nameMatcher(nameInput.value);
    const byState = stateMatcher(stateInput.value);
    const shown = [...jobs.values()].filter((job) => byName(job.name) && byState(job)).sort(newestFirst);
    body.replaceChildren(...shown.map(row));
    document.getElementById("no-jobs").hidden = shown.length > 0;
    count.textContent = `${shown.length} of ${jobs.size} jobs`;
    // The multi-job view of what is shown (ids in ascending order, as `jobs logs` would).
    const ids = shown.slice(0, 50).map((job) => job.id).reverse();
    followShown.href = `/jobs?ids=${ids.join(",")}`;
    followShown.hidden = ids.length === 0;
  };
  // Bursts of updates cost one redraw per frame at most.
  const schedule = () => {
    if (timer === null) timer = setTimeout(redraw, 0);
  };
  const filtersChanged = () => {
    const params = new URLSearchParams();
    if (nameInput.value) params.set("name", nameInput.value);
    if (stateInput.value) params.set("state", stateInput.value);
    const search = params.toString();
    history.replaceState(null, "", search ? `/?${search}` : "/");
    redraw();
  };
  nameInput.addEventListener("input", filtersChanged);
  stateInput.addEventListener("change", filtersChanged);
  document.getElementById("list-filters").addEventListener("submit", (event) => event.preventDefault());
  // Running jobs' durations tick.
  setInterval(() => {
    for (const tr of body.children) {
      const job = jobs.get(tr.dataset.id);
      if (job && job.started_at && !isTerminal(job.state)) {
        tr.querySelector("td.duration").textContent = durationText(job);
      }
    }
  }, 1000);

  const handlers = {
    jobs: (event) => {
      const data = payload(event);
      if (data === null || !Array.isArray(data.jobs)) return;
      jobs.clear();
      for (const job of data.jobs) if (validJob(job)) jobs.set(job.id, job);
      schedule();
    },
    job: (event) => {
      const data = payload(event);
      if (data === null || !validJob(data.job)) return;
      jobs.set(data.job.id, data.job);
      schedule();
    },
    removed: (event) => {
      const data = payload(event);
      if (data === null || typeof data.id !== "string") return;
      jobs.delete(data.id);
      schedule();
    },
  };
  // Each (re)open starts with the whole list (`jobs`), so a hidden spell misses nothing.
  new Feed(() => "/api/events/jobs", handlers, status).open();
  redraw();
}
