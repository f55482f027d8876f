// The page's entry point: every path serves the same app.html, and this picks the view from
// location.pathname: `/` the job list, `/jobs/ID` one job, `/jobs?ids=..|name=..` many jobs.

import { JOB_ID } from "./common.js";
import { showJob } from "./job.js";
import { showList } from "./list.js";
import { showMulti } from "./multi.js";

function notFound() {
  const error = document.getElementById("page-error");
  error.textContent = "No such page. The job list is at /.";
  error.hidden = false;
}

function route() {
  const path = location.pathname;
  const params = new URLSearchParams(location.search);
  if (path === "/") return showList();
  const job = /^\/jobs\/([^/]+)\/?$/.exec(path);
  if (job !== null) {
    if (!JOB_ID.test(job[1])) return notFound();
    return showJob(job[1], params);
  }
  if (path === "/jobs" || path === "/jobs/") return showMulti(params);
  return notFound();
}

route();
