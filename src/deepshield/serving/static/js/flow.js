/* One file's analysis: checked, uploaded, waited for, shown. */
import { api, ApiFailure, formData } from "./api.js";
import { drawBatch, hideBatch, isFinished } from "./batch.js";
import { $, focusIfLost, revealIfOffScreen } from "./dom.js";
import { formatBytes, parseVideoTime } from "./format.js";
import { renderImage } from "./image.js";
import { analyseAsJob, endUpload, startUpload, stopWaiting } from "./jobs.js";
import { clearOutput, setBusy, showError, showMessage, showProgress } from "./messages.js";
import { looksLikeSaved } from "./saved.js";
import { markExample, serverInfoKnown } from "./startup.js";
import { state } from "./state.js";
import { renderVideo } from "./video.js";

// The part of each video to analyse, from the drop zone's two fields: { start, end } (null: not set).
export function chosenSpan() {
  const start = parseVideoTime($("span-start").value);
  const end = parseVideoTime($("span-end").value);
  if (end !== null && end <= (start ?? 0)) throw new Error("The part of the video to analyse must end after it starts.");
  return { start, end };
}

export function cancelAnalysis() {
  stopAnalysis("the analysis was cancelled");
}

// The analysis under way is given up, the reader told `why` (what cancelled it).
export function stopAnalysis(why) {
  const fileName = $("progress-file").textContent;
  // Its job is deleted by a request to a server that may not answer: one back after a restart with its state
  // folder analyses the file anyway, for nobody ("the server has deleted the file" was then untrue).
  const deleted = state.lostSince !== null
    ? "; the server is not answering, so the file may still be analysed there if it comes back"
    : ", and the server has deleted the file";
  state.run += 1;
  stopWaiting();
  $("progress").hidden = true;
  setBusy(false);
  if (state.batch) {
    for (const item of state.batch.items) {
      if (!isFinished(item)) Object.assign(item, { status: "failed", error: "Cancelled before it was analysed" });
    }
    drawBatch();
  }
  showMessage(fileName, why + deleted, "info");
  focusIfLost($("message")); // not back to the page's top
}

function looksLikeVideo(file) {
  if (file.type && file.type.startsWith("video/")) return true;
  // A video's suffix counts unless the browser calls the file an image: browsers leave many video types
  // empty, and Chromium calls a .ts (MPEG-TS) "text/vnd.trolltech.linguist".
  const suffix = (file.name.split(".").pop() || "").toLowerCase();
  return !(file.type || "").startsWith("image/") && state.accepted !== null && state.accepted.video_suffixes.includes(suffix);
}

// What the page can tell before uploading: a sentence when the file cannot go, else null.
export function refusal(file) {
  if (state.limits && file.size > state.limits.max_upload_bytes) {
    return `It is ${formatBytes(file.size)}; this server accepts files up to ${formatBytes(state.limits.max_upload_bytes)}.`;
  }
  if (file.size === 0) return "The file is empty.";
  // Among several files (or pasted), a saved result went to the server, to be refused as an unsupported type.
  if (looksLikeSaved(file)) return "A result saved from this page opens on its own: drop or choose it by itself.";
  if (looksLikeVideo(file)) {
    try {
      chosenSpan();
    } catch (err) {
      return err.message;
    }
  }
  return null;
}

// Upload one file and wait for its analysis: { result, file } (file: what the server says of the
// upload), or null when a newer analysis took over meanwhile.
// `span` ({ start, end }, seconds or null): the part of a video to analyse; by default the drop zone's.
export async function fetchAnalysis(file, run, span) {
  const analysis = await fetchResult(file, run, span);
  if (analysis) analysis.analysedAt = new Date().toISOString();
  return analysis;
}

// Animations go to a job at once, not first to /v1/analyze to be refused as a video and uploaded again.
// GIFs are mostly animations: all go (a still one comes back as a photo's result). A WebP or PNG says in
// its first bytes whether it is animated: the VP8X header's animation flag, an acTL chunk before IDAT.
async function mayBeAnimated(file) {
  if (file.type === "image/gif" || (!file.type && /\.gif$/i.test(file.name))) return true;
  const head = new Uint8Array(await file.slice(0, 65536).arrayBuffer());
  const text = (from, length) => String.fromCharCode(...head.subarray(from, from + length));
  if (text(0, 4) === "RIFF" && text(8, 4) === "WEBP") return text(12, 4) === "VP8X" && (head[20] & 0x02) !== 0;
  if (text(1, 3) !== "PNG") return false;
  const view = new DataView(head.buffer);
  for (let at = 8; at + 8 <= head.length; at += 12 + view.getUint32(at)) {
    const chunk = text(at + 4, 4);
    if (chunk === "acTL") return true;
    if (chunk === "IDAT") return false;
  }
  return false;
}

async function fetchResult(file, run, span) {
  if (looksLikeVideo(file)) return analyseAsJob(file, run, span);
  showProgress(file.name, null, "Uploading and analysing…"); // before the first wait (analyse reveals it)
  // analyseAsJob goes no further once another file is chosen (or Cancel pressed) meanwhile: the old file
  // was uploaded again as a job, its progress left on screen over the new result.
  if (await mayBeAnimated(file)) return analyseAsJob(file, run, span);
  if (run !== state.run) return null; // moved on while the file's first bytes were read
  let result;
  const signal = startUpload();
  try {
    result = await api("v1/analyze?preview=true", { method: "POST", body: formData(file), signal });
  } catch (err) {
    if (err instanceof ApiFailure && err.code === "aborted") return null;
    if (!(err instanceof ApiFailure && err.code === "video_needs_job")) throw err;
  } finally {
    endUpload(run);
  }
  return result ? { result, file: result.file } : analyseAsJob(file, run, span);
}

// `source` ({ file, exampleFile }): the file analysed, kept so that a video can be looked at closer
// (null for a result opened from a saved file). `analysis.analysedAt`: when it was analysed (ISO, UTC).
export function render(analysis, fileName, source) {
  state.analysedAt = analysis.analysedAt || null;
  if (analysis.result.kind === "video") renderVideo(analysis.result, analysis.file, fileName, source);
  else renderImage(analysis.result, fileName);
}

// `exampleFile`: set when the file is one of the examples (its card stays highlighted); `span`: a
// part of a video other than the drop zone's (Look closer). `again`: the file shown is analysed again
// (Look closer, more frames): a list of files stays, its unfinished files said to be left.
export async function analyse(file, exampleFile, span, again = false) {
  const run = startRun(exampleFile, again);
  if (file) await analyseIn(run, file, exampleFile, span);
}

// What went before is given up for a new analysis, whose number is returned.
export function startRun(exampleFile, again = false) {
  const run = ++state.run;
  stopWaiting();
  clearOutput();
  if (again && state.batch) {
    for (const item of state.batch.items) {
      if (!isFinished(item)) Object.assign(item, { status: "failed", error: "Not analysed: a file of the list was analysed again instead" });
    }
    drawBatch();
  } else {
    hideBatch();
  }
  markExample(exampleFile || null);
  return run;
}

// `file` analysed as analysis number `run` (startRun's), shown unless a newer one took over.
export async function analyseIn(run, file, exampleFile, span) {
  await serverInfoKnown();
  if (run !== state.run) return;
  const refused = refusal(file);
  if (refused) {
    showMessage(file.name, refused);
    return;
  }
  setBusy(true);
  try {
    const pending = fetchAnalysis(file, run, span); // shows the progress bar before its first wait
    revealIfOffScreen($("progress"));
    // Look closer and Analyse again go with the result they sit in: the keyboard's place is Cancel (it was the
    // page's body, and Tab went on to the footer, past the progress).
    if (!$("progress-cancel").hidden) focusIfLost($("progress-cancel"));
    const analysis = await pending;
    if (!analysis || run !== state.run) return;
    $("progress").hidden = true;
    render(analysis, file.name, { file, exampleFile });
    revealIfOffScreen($("result"));
    focusIfLost($("result-file"));
  } catch (err) {
    if (run !== state.run) return;
    $("progress").hidden = true;
    showError(err, file.name);
    focusIfLost($("message"));
  } finally {
    if (run === state.run) setBusy(false);
  }
}
