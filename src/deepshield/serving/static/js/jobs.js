/* Background jobs (videos): submitted, polled, and cancelled when the page stops waiting. */
import { api, ApiFailure, formData } from "./api.js";
import { $ } from "./dom.js";
import { chosenSpan, stopAnalysis } from "./flow.js";
import { capitalise } from "./format.js";
import { showProgress } from "./messages.js";
import { state } from "./state.js";

const POLL_MS = 600;
// A server restarted with a state folder keeps its jobs and runs the one it stopped again: polls that find
// no server (or a 502-504 from it or its proxy while it restarts) are retried for this long before the page
// gives up. It gave up at the first, and the result the restarted server made was shown to nobody.
const RECONNECT_MS = 120_000;
const unreachable = (err) => err instanceof ApiFailure && (err.code === "network" || [502, 503, 504].includes(err.status));
// The server's own 503 (too busy to answer a poll): it is there, and says when to ask again (Retry-After, taken
// within these bounds). It was taken for a server gone: asked again every 600 ms, and given up after 2 minutes.
const serverBusy = (err) => err.status === 503 && err.code === "busy";
const BUSY_WAIT_MS = [POLL_MS, 30_000];
const busyWait = (err) => Math.min(Math.max((err.retryAfter ?? 0) * 1000, BUSY_WAIT_MS[0]), BUSY_WAIT_MS[1]);
// A server away is asked again when it says (a 503 "shutting_down" sends Retry-After), else after a wait that
// doubles from POLL_MS up to this. Both were asked every 600 ms for the whole of RECONNECT_MS.
const LOST_WAIT_MS = 10_000;
const lostWait = (err, wait) =>
  err.retryAfter !== undefined ? busyWait(err) : state.lostSince === null ? POLL_MS : Math.min(wait * 2, LOST_WAIT_MS);

// A job this page no longer waits for (another file was chosen, or Cancel) is cancelled on the
// server, so that it does not hold the worker the next file needs; its file is deleted there.
// keepalive: the request outlives the page, for a page being left or reloaded.
function cancelJob(id) {
  api("v1/jobs/" + encodeURIComponent(id), { method: "DELETE", keepalive: true }).catch(() => {}); // 404: already gone
}

// A page left or reloaded stops waiting too: its job ran on for nobody, the next file waiting behind it.
// Given up in the page as well: a page kept by the browser and shown again by Back polled its deleted job,
// to say "No job 'x7Q…': unknown, deleted, or finished more than 1 hour ago and forgotten".
window.addEventListener("pagehide", () => {
  if (state.job || state.upload) stopAnalysis("the analysis was cancelled as the page was left");
});

// Cancel is offered while a file uploads (a photo's to /v1/analyze too) or a job runs.
function offerCancel() {
  $("progress-cancel").hidden = !(state.job || state.upload);
}

// An upload on its way, for Cancel or the next file chosen to stop (stopWaiting): its request's signal.
// A photo's had none: it uploaded on beside the next file's, and was analysed for nobody.
export function startUpload() {
  const upload = new AbortController();
  state.upload = upload;
  offerCancel();
  return upload.signal;
}

// The upload of `run` has ended (a newer run's is left alone).
export function endUpload(run) {
  if (run === state.run) state.upload = null;
  offerCancel();
}

function releaseJob(id) {
  if (state.job === id) Object.assign(state, { job: null, lostSince: null });
  offerCancel();
}

// Whatever job the page was waiting for is given up. Called with state.run moved on, so every loop
// waiting on the old run stops at its next step. An upload still on its way is stopped: the server
// deletes what it received of it; a job it had already made is cancelled as its answer is read.
export function stopWaiting() {
  if (state.job) cancelJob(state.job);
  if (state.upload) state.upload.abort();
  Object.assign(state, { job: null, upload: null, lostSince: null });
  offerCancel();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function analyseAsJob(file, run, span) {
  if (run !== state.run) return null; // moved on while the quick path was answering: nothing is uploaded
  // How far the upload is goes untold (fetch has no upload progress): a moving bar, not one left at 0%.
  showProgress(file.name, null, "Uploading…");
  const select = $("frames-select");
  const query = new URLSearchParams();
  if (select.selectedIndex > 0) query.set("frames", select.value); // else the server's default
  const { start, end } = span || chosenSpan();
  if (start !== null) query.set("start_s", String(start));
  if (end !== null) query.set("end_s", String(end));
  const search = query.toString();
  const signal = startUpload();
  let job;
  try {
    job = await api("v1/jobs" + (search ? "?" + search : ""), { method: "POST", body: formData(file), signal });
  } catch (err) {
    if (!(err instanceof ApiFailure && err.code === "aborted")) throw err;
    if (err.location) cancelJob(err.location.split("/").pop()); // the job made just before the stop
    return null;
  } finally {
    endUpload(run);
  }
  if (run !== state.run) {  // another file was chosen, or Cancel pressed, as the answer arrived
    cancelJob(job.id);
    return null;
  }
  state.job = job.id;
  offerCancel();
  try {
    return await pollJob(job, file, run);
  } finally {
    releaseJob(job.id);
  }
}

async function pollJob(job, file, run) {
  // A job is "queued" from submission until a worker takes it, which is usually at once: only a
  // job still queued when polled again is really waiting.
  let polls = 0;
  let wait = POLL_MS; // longer while the server says it is busy
  let busy = false;
  // Given up meanwhile (another file, or Cancel): stopWaiting has already deleted the job, so it is not
  // polled again (its answer would be a 404).
  const givenUp = () => run !== state.run;
  while (job.status === "queued" || job.status === "running") {
    const stage = busy ? `The server is busy: asking again in ${Math.round(wait / 1000)} s…`
      : state.lostSince !== null ? "The server is not answering: trying again…"
      : job.status === "running" ? capitalise(job.stage) + "…" : polls > 0 ? "Waiting for a free worker…" : "Starting…";
    showProgress(file.name, job.progress, stage);
    await sleep(wait);
    if (givenUp()) return null;
    try {
      job = await api("v1/jobs/" + encodeURIComponent(job.id));
    } catch (err) {
      if (givenUp()) return null; // deleted while this poll was on its way
      busy = serverBusy(err);
      if (busy) {
        wait = busyWait(err);
        state.lostSince = null; // answered: not lost, however long it stays busy
        continue;
      }
      if (unreachable(err)) {
        wait = lostWait(err, wait);
        state.lostSince = state.lostSince ?? Date.now();
        if (Date.now() - state.lostSince < RECONNECT_MS) continue;
      } else if (state.lostSince !== null && err.status === 404) {
        // Back without it: a server with no state folder forgets its jobs when it stops.
        throw new ApiFailure(404, err.code, "The server restarted and lost this analysis: choose the file again");
      }
      throw err;
    }
    // Given up while this poll was on its way: its "running" would show the progress again, for good.
    if (givenUp()) return null;
    state.lostSince = null;
    busy = false;
    wait = POLL_MS;
    polls += 1;
  }
  if (run !== state.run) return null;
  $("progress").hidden = true;
  if (job.status === "failed") {
    const error = job.error || { error: "failed", detail: "The analysis failed." };
    const status = state.jobErrorStatuses[error.error] || 422;
    throw new ApiFailure(status, error.error, error.detail);
  }
  return { result: job.result, file: job.file };
}
