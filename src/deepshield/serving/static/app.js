/* Deepfake Shield web page: upload, call the /v1 API, draw the results. Plain JS, no dependencies. */
"use strict";

(function () {
  const KEY_STORAGE = "deepshield-api-key";
  const POLL_MS = 600;
  const TRACK_COLOURS = ["#2563eb", "#d97706", "#7c3aed", "#0d9488", "#db2777", "#4b5563", "#65a30d", "#0891b2"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  // What the server owns (limits, accepted media, the status of a failed job's error code) comes from
  // GET /healthz at start; nothing of it is written into this page.
  const state = { limits: null, accepted: null, terms: null, jobErrorStatuses: {}, card: null, run: 0, example: null, batch: null, job: null, uploading: false };
  // Three-way labels (verdicts, faces, tracks), in words for the small badges.
  const LABEL_WORDS = { likely_manipulated: "LIKELY MANIPULATED", inconclusive: "INCONCLUSIVE", no_signs_found: "NO SIGNS FOUND", no_face: "NO FACE" };
  // The synthetic-face score's own call, in words (it uses the same three labels).
  const SYNTHETIC_WORDS = {
    likely_manipulated: "likely AI-generated",
    inconclusive: "inconclusive",
    no_signs_found: "no signs of AI generation",
  };
  const NO_SYNTHETIC = "Synthetic-face score: not available in this model";

  // A face's, track's or file's second score and which of the two set its label (see README "Verdicts").
  function syntheticText(probability, label, driver) {
    if (probability === null || probability === undefined) return NO_SYNTHETIC;
    const call = label ? ` (${SYNTHETIC_WORDS[label]})` : "";
    const drives = driver === "synthetic" ? "synthetic-face score" : "manipulation score";
    return `Synthetic-face score ${probabilityText(probability)}${call} · the ${drives} drives the verdict`;
  }
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- helpers
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of [].concat(children || [])) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function svg(tag, attrs, children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of [].concat(children || [])) {
      if (child) node.append(child);
    }
    return node;
  }

  const pct = (p, digits = 0) => (p === null || p === undefined ? "—" : (p * 100).toFixed(digits) + "%");
  // A probability for display, never a rounded "0%" or "100%", which no estimate can claim: those read
  // "<1%" / ">99%" at whole percents, "<0.1%" / ">99.9%" to a tenth (the Python side's `shown_probability`,
  // which the server's verdict reasons use).
  const probabilityText = (p, digits = 1) => {
    if (p === null || p === undefined) return "—";
    const shown = (p * 100).toFixed(digits);
    const step = 10 ** -digits;
    if (shown === (0).toFixed(digits)) return `<${step.toFixed(digits)}%`;
    if (shown === (100).toFixed(digits)) return `>${(100 - step).toFixed(digits)}%`;
    return shown + "%";
  };
  const scorePct = (p) => probabilityText(p, 0);
  const scoreColour = (p) => `hsl(${Math.round(120 * (1 - Math.min(1, Math.max(0, p))))}, 68%, 38%)`;

  function formatBytes(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(1) + " GB";
    if (n >= 1e6) return (n / 1e6).toFixed(n >= 1e8 ? 0 : 1) + " MB";
    if (n >= 1e3) return (n / 1e3).toFixed(0) + " KB";
    return n + " bytes";
  }

  // A time in a video, as precise as the stretch shown (`span` seconds) needs: "3.5 s", "1:05", "1:02:03".
  function formatTime(seconds, span) {
    const digits = span < 5 ? 1 : 0;
    if (span < 60 && seconds < 60) return `${seconds.toFixed(digits)} s`;
    const rounded = Number(seconds.toFixed(digits));
    const h = Math.floor(rounded / 3600);
    const m = Math.floor((rounded - h * 3600) / 60);
    const s = (rounded - h * 3600 - m * 60).toFixed(digits).padStart(digits ? 4 : 2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  // A time typed for a video, as deepshield.media.units.parse_clock_time reads it: seconds, m:ss or
  // h:mm:ss; null when blank. Throws an Error whose message says what is accepted.
  function parseVideoTime(text) {
    const trimmed = text.trim();
    if (!trimmed) return null;
    const found = /^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?|\.\d+)$/.exec(trimmed);
    if (!found) throw new Error(`'${text}' is not a time: write seconds (95), m:ss (1:35) or h:mm:ss (0:01:35)`);
    const [hours, minutes, seconds] = [found[1], found[2], found[3]].map((part) => (part ? Number(part) : 0));
    if ((found[2] !== undefined && seconds >= 60) || (found[1] !== undefined && minutes >= 60)) {
      throw new Error(`'${text}' is not a time: minutes and seconds after a colon are below 60`);
    }
    return hours * 3600 + minutes * 60 + seconds;
  }

  // The part of each video to analyse, from the drop zone's two fields: { start, end } (null: not set).
  function chosenSpan() {
    const start = parseVideoTime($("span-start").value);
    const end = parseVideoTime($("span-end").value);
    if (start !== null && end !== null && end <= start) throw new Error("The part of the video to analyse must end after it starts.");
    return { start, end };
  }

  class ApiFailure extends Error {
    constructor(status, code, detail) {
      super(detail);
      this.status = status;
      this.code = code;
      this.detail = detail;
    }
  }

  async function api(path, options) {
    const headers = new Headers((options && options.headers) || {});
    const key = localStorage.getItem(KEY_STORAGE);
    if (key) headers.set("X-API-Key", key);
    let response;
    try {
      response = await fetch(path, Object.assign({}, options, { headers }));
    } catch (err) {
      throw new ApiFailure(0, "network", "Could not reach the server. Check your connection and that the server is running.");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      const code = (body && body.error) || "http_" + response.status;
      const detail = (body && body.detail) || `The server answered ${response.status} ${response.statusText}.`;
      if (response.status === 401) showKeyPanel();
      throw new ApiFailure(response.status, code, detail);
    }
    return body;
  }

  // ---------------------------------------------------------------- messages and progress
  const TITLES = {
    400: "Request refused.",
    401: "API key needed.",
    404: "Not found.",
    408: "Upload too slow.",
    413: "File too large.",
    415: "File type not supported.",
    422: "This file cannot be analysed.",
    500: "The analysis failed.",
    503: "The server is busy.",
    504: "The analysis took too long.",
  };

  // One sentence per error: the file's name, then the server's own message (a generic title only
  // when the server sent none).
  function showMessage(fileName, sentence, kind) {
    const box = $("message");
    box.className = "alert" + (kind === "info" ? " info" : "");
    $("message-title").textContent = fileName ? fileName + ":" : "";
    $("message-detail").textContent = sentence ? capitalise(sentence.trim()).replace(/([^.!?])$/, "$1.") : "";
    box.hidden = false;
  }

  // An error in one sentence: the server's own message, else a title for its status.
  function errorSentence(err) {
    if (err instanceof ApiFailure) {
      return err.detail || TITLES[err.status] || (err.status ? `Error ${err.status}.` : "Connection problem.");
    }
    return "Something went wrong in this page: " + String(err && err.message ? err.message : err);
  }

  function showError(err, fileName) {
    showMessage(fileName, errorSentence(err));
  }

  function clearResult() {
    $("message").hidden = true;
    $("saved-note").hidden = true;
    $("result").hidden = true;
    $("image-result").hidden = true;
    $("video-result").hidden = true;
  }

  function clearOutput() {
    clearResult();
    $("progress").hidden = true;
  }

  // A job this page no longer waits for (another file was chosen, or Cancel) is cancelled on the
  // server, so that it does not hold the worker the next file needs; its file is deleted there.
  function cancelJob(id) {
    api("/v1/jobs/" + encodeURIComponent(id), { method: "DELETE" }).catch(() => {}); // 404: already gone
  }

  // Cancel is offered while a job's file uploads or the job runs.
  function offerCancel() {
    $("progress-cancel").hidden = !(state.job || state.uploading);
  }

  function releaseJob(id) {
    if (state.job === id) state.job = null;
    offerCancel();
  }

  // Whatever job the page was waiting for is given up. Called with state.run moved on, so every loop
  // waiting on the old run stops at its next step. An upload is not aborted: the server may already
  // hold the whole file and have queued its job, which only the answer names; the job is cancelled
  // as that answer arrives.
  function stopWaiting() {
    if (state.job) cancelJob(state.job);
    state.job = null;
    state.uploading = false;
    offerCancel();
  }

  function cancelAnalysis() {
    const fileName = $("progress-file").textContent;
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
    showMessage(fileName, "the analysis was cancelled, and the server has deleted the file", "info");
  }

  function setBusy(busy) {
    $("dropzone").classList.toggle("busy", busy);
  }

  function showProgress(fileName, fraction, stage) {
    $("progress").hidden = false;
    $("progress-file").textContent = fileName;
    $("progress-stage").textContent = stage || "";
    const bar = $("progress-bar");
    if (fraction === null) {
      bar.classList.add("indeterminate");
      bar.removeAttribute("aria-valuenow");
    } else {
      bar.classList.remove("indeterminate");
      bar.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
      $("progress-fill").style.width = (fraction * 100).toFixed(1) + "%";
    }
  }

  // ---------------------------------------------------------------- start-up
  // How many frames a video job samples: the server's default, then doublings up to its maximum.
  // More frames find a swap that shows in part of a long video, at proportionally more time.
  function offerFrameCounts(limits) {
    const counts = [limits.video_frames];
    while (counts[counts.length - 1] * 2 <= limits.max_video_frames) counts.push(counts[counts.length - 1] * 2);
    if (counts[counts.length - 1] < limits.max_video_frames) counts.push(limits.max_video_frames);
    $("frames-select").replaceChildren(
      ...counts.map((n, i) => el("option", { value: String(n), text: i === 0 ? `${n} (default)` : `${n} (about ${Math.round(n / counts[0])}x the time)` }))
    );
    $("frames-choice").hidden = false;
    $("span-choice").hidden = false;
  }

  function showKeyPanel() {
    $("api-key-panel").hidden = false;
  }

  async function loadServerInfo() {
    try {
      const health = await api("/healthz");
      state.limits = health.limits;
      state.accepted = health.accepted;
      state.terms = health.terms;
      state.jobErrorStatuses = health.job_error_statuses;
      $("footer-scope").textContent = health.scope;
      $("limits").textContent =
        `Photos: ${health.accepted.image_formats.join(", ")} · Videos: ${health.accepted.video_formats.join(", ")}` +
        ` · up to ${formatBytes(health.limits.max_upload_bytes)}, videos up to ${Math.round(health.limits.max_video_duration_s / 60)} min (or a part of a longer one)`;
      const suffixes = [...health.accepted.image_suffixes, ...health.accepted.video_suffixes, "json"]; // json: a saved result
      $("file-input").setAttribute("accept", ["image/*", "video/*", ...suffixes.map((suffix) => "." + suffix)].join(","));
      offerFrameCounts(health.limits);
      if (health.api_key_required && !localStorage.getItem(KEY_STORAGE)) showKeyPanel();
    } catch (err) {
      showError(err);
    }
    try {
      const card = await api("/v1/model");
      state.card = card;
      const info = $("model-info");
      const pills = [el("span", { class: "pill", text: `Model ${card.name} ${card.version}`, "data-role": "model-name" })];
      // The thresholds and bands verdicts are called with (the server's, as in every result), not the card's own.
      const terms = state.terms;
      if (terms) {
        const band = terms.inconclusive;
        pills.push(
          el("span", { class: "pill", text: `Threshold ${pct(terms.threshold, 0)}`, "data-role": "threshold" }),
          el("span", { class: "pill", text: `Inconclusive ${pct(band.low, 0)}–${pct(band.high, 0)}`, "data-role": "band", title: band.fitted_on }),
          el("span", {
            class: "pill", "data-role": "synthetic-threshold",
            text: terms.synthetic_threshold !== null ? `Synthetic-face threshold ${pct(terms.synthetic_threshold, 0)}` : NO_SYNTHETIC,
          })
        );
      }
      info.replaceChildren(...pills);
      renderModelRecord(card);
      $("api-key-panel").hidden = true;
    } catch (err) {
      $("model-info").replaceChildren(el("span", { class: "muted", text: err.status === 401 ? "Model details need the API key" : "Model details unavailable" }));
    }
  }

  // The model card's own figures on real labelled media (not its synthetic validation), so that a reader
  // knows what it catches and what it misses before trusting a verdict.
  function renderModelRecord(card) {
    const metrics = card.metrics || {};
    const sets = ((card.training && card.training.benchmarks) || [])
      .map((name) => ({ name, key: name.split("/").pop().replace(/[^A-Za-z0-9]+/g, "_") }))
      .filter(({ key }) => metrics[`bench_${key}_file_auc`] !== undefined);
    if (!sets.length) return;
    const auc = (prefix) => metrics[prefix] === undefined ? "—"
      : `${metrics[prefix].toFixed(2)}` + (metrics[prefix + "_lo"] !== undefined ? ` [${metrics[prefix + "_lo"].toFixed(2)}, ${metrics[prefix + "_hi"].toFixed(2)}]` : "");
    const flagged = (key) => metrics[key] === undefined ? "—" : pct(metrics[key], 1);
    const rows = sets.map(({ name, key }) => [name, auc(`bench_${key}_file_auc`), auc(`bench_${key}_face_auc`), flagged(`real_fpr_${key}`)]);
    if (metrics.val_auc !== undefined) {
      rows.push(["its own synthesised blends (validation)", "—", auc("val_auc"), flagged("real_fpr_validation")]);
    }
    $("model-record-rows").replaceChildren(
      ...rows.map((cells) => el("tr", { "data-role": "record-row" }, cells.map((text, i) => el(i ? "td" : "th", { text, scope: i ? null : "row" }))))
    );
    $("model-record-note").textContent =
      "AUC: how often a fake file (or face) scores above a real one; 0.5 is chance, 1 always. In brackets, a 95% interval: " +
      "these sets are small. Real files flagged: the share of a set's real files at or above the threshold. These sets " +
      "chose this model's epoch and threshold, so they flatter it; fakes from tools it has not met can fare worse, and " +
      "its own synthesised blends say little about real swaps.";
    $("model-record").hidden = false;
  }

  async function loadExamples() {
    let examples = [];
    try {
      const response = await fetch("/static/examples/index.json");
      if (response.ok) examples = await response.json();
    } catch (err) {
      examples = [];
    }
    const list = $("examples");
    if (!examples.length) {
      list.replaceChildren(el("p", { class: "muted small", text: "No examples installed." }));
      return;
    }
    list.replaceChildren(
      ...examples.map((example) => {
        const thumb = example.kind === "video" ? example.poster || "" : example.file;
        const truth = example.truth === "manipulated" ? "manipulated" : "real";
        const button = el("button", { type: "button", class: "example", title: example.description, "data-file": example.file, "data-truth": truth }, [
          el("div", { class: "thumb" }, thumb ? [el("img", { src: "/static/examples/" + thumb, alt: "" })] : []),
          el("span", { text: example.title }),
          el("span", { class: "tag" }, [el("span", { class: "truth " + truth, text: truth === "manipulated" ? "Manipulated" : "Real" }), document.createTextNode(example.kind === "video" ? " video" : " photo")]),
        ]);
        button.addEventListener("click", () => runExample(example));
        return button;
      })
    );
  }

  function markExample(file) {
    state.example = file;
    document.querySelectorAll("button.example").forEach((button) => {
      const selected = button.getAttribute("data-file") === file;
      button.classList.toggle("selected", selected);
      button.setAttribute("aria-pressed", selected ? "true" : "false");
      if (!selected) button.blur();
    });
  }

  async function runExample(example) {
    try {
      const response = await fetch("/static/examples/" + example.file);
      if (!response.ok) throw new ApiFailure(response.status, "example", "The example file could not be loaded.");
      const blob = await response.blob();
      const type = blob.type || (example.kind === "video" ? "video/mp4" : "image/jpeg");
      analyse(new File([blob], example.file, { type }), example.file);
    } catch (err) {
      clearOutput();
      showError(err, example.file);
    }
  }

  // ---------------------------------------------------------------- analysis flow
  function looksLikeVideo(file) {
    if (file.type && file.type.startsWith("video/")) return true;
    const suffix = (file.name.split(".").pop() || "").toLowerCase();
    return !file.type && state.accepted !== null && state.accepted.video_suffixes.includes(suffix);
  }

  // What the page can tell before uploading: a sentence when the file cannot go, else null.
  function refusal(file) {
    if (state.limits && file.size > state.limits.max_upload_bytes) {
      return `It is ${formatBytes(file.size)}; this server accepts files up to ${formatBytes(state.limits.max_upload_bytes)}.`;
    }
    if (file.size === 0) return "The file is empty.";
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
  async function fetchAnalysis(file, run, span) {
    const analysis = await fetchResult(file, run, span);
    if (analysis) analysis.analysedAt = new Date().toISOString();
    return analysis;
  }

  async function fetchResult(file, run, span) {
    if (looksLikeVideo(file)) return analyseAsJob(file, run, span);
    showProgress(file.name, null, "Uploading and analysing…");
    try {
      const result = await api("/v1/analyze?preview=true", { method: "POST", body: formData(file) });
      return { result, file: result.file };
    } catch (err) {
      if (err instanceof ApiFailure && err.code === "video_needs_job") return analyseAsJob(file, run, span);
      throw err;
    }
  }

  // `source` ({ file, exampleFile }): the file analysed, kept so that a video can be looked at closer
  // (null for a result opened from a saved file). `analysis.analysedAt`: when it was analysed (ISO, UTC).
  function render(analysis, fileName, source) {
    state.analysedAt = analysis.analysedAt || null;
    if (analysis.result.kind === "video") renderVideo(analysis.result, analysis.file, fileName, source);
    else renderImage(analysis.result, fileName);
  }

  // `exampleFile`: set when the file is one of the examples (its card stays highlighted); `span`: a
  // part of a video other than the drop zone's (Look closer).
  async function analyse(file, exampleFile, span) {
    const run = ++state.run;
    stopWaiting();
    clearOutput();
    hideBatch();
    markExample(exampleFile || null);
    if (!file) return;
    const refused = refusal(file);
    if (refused) {
      showMessage(file.name, refused);
      return;
    }
    setBusy(true);
    try {
      const analysis = await fetchAnalysis(file, run, span);
      if (!analysis || run !== state.run) return;
      $("progress").hidden = true;
      render(analysis, file.name, { file, exampleFile });
    } catch (err) {
      if (run !== state.run) return;
      $("progress").hidden = true;
      showError(err, file.name);
    } finally {
      if (run === state.run) setBusy(false);
    }
  }

  // ---------------------------------------------------------------- several files at once
  // Analysed one after another and listed with their verdicts. The result shown is the latest
  // finished one, until a row is picked: then that row's stays.
  async function analyseAll(files) {
    const run = ++state.run;
    stopWaiting();
    clearOutput();
    markExample(null);
    state.batch = { items: files.map((file) => ({ file, status: "waiting", analysis: null, error: null })), picked: null };
    drawBatch();
    setBusy(true);
    try {
      for (const item of state.batch.items) {
        const refused = refusal(item.file);
        if (refused) {
          Object.assign(item, { status: "failed", error: refused });
        } else {
          item.status = "running";
          drawBatch();
          try {
            item.analysis = await fetchAnalysis(item.file, run);
            if (!item.analysis || run !== state.run) return;
            item.status = "done";
          } catch (err) {
            if (run !== state.run) return;
            Object.assign(item, { status: "failed", error: errorSentence(err) });
          }
          $("progress").hidden = true;
        }
        if (state.batch.picked === null) showItem(item);
        drawBatch();
      }
    } finally {
      if (run === state.run) setBusy(false);
    }
  }

  const isFinished = (item) => item.status === "done" || item.status === "failed";

  function showItem(item) {
    clearResult();
    if (item.status === "done") {
      render(item.analysis, item.file.name, item.openedFrom ? null : { file: item.file, exampleFile: null });
      if (item.openedFrom) showSavedNote(item.openedFrom);
    } else if (item.status === "failed") showMessage(item.file.name, item.error);
  }

  // ---------------------------------------------------------------- a saved result, opened again
  // A ".json" file dropped or chosen is a result saved from this page ("Save this result" or "Save all
  // results"): it is shown as it was saved, without analysing anything again.
  const looksLikeSaved = (file) => file.type === "application/json" || /\.json$/i.test(file.name);
  const NOT_SAVED = "This JSON file is not a result saved by Deepfake Shield.";

  async function openSaved(file) {
    const run = ++state.run;
    stopWaiting();
    clearOutput();
    hideBatch();
    markExample(null);
    let saved = null;
    try {
      saved = JSON.parse(await file.text());
    } catch (err) {
      saved = null;
    }
    if (run !== state.run) return;
    const entries = Array.isArray(saved) ? saved : [saved];
    const valid = entries.length > 0 && entries.every((entry) => entry && typeof entry.file_name === "string" && (entry.result ? entry.result.verdict : entry.error));
    if (!valid) {
      showMessage(file.name, NOT_SAVED);
      return;
    }
    const items = entries.map((entry) => ({
      file: { name: entry.file_name },
      status: entry.result ? "done" : "failed",
      analysis: entry.result ? { result: entry.result, file: entry.file, analysedAt: entry.analysed_at || null } : null,
      error: entry.error || null,
      openedFrom: file.name,
    }));
    try {
      if (Array.isArray(saved)) {
        const first = Math.max(0, items.findIndex((item) => item.status === "done"));
        state.batch = { items, picked: first }; // its row is the one highlighted
        drawBatch();
        showItem(items[first]);
      } else {
        showItem(items[0]);
      }
    } catch (err) {
      clearOutput();
      hideBatch();
      showMessage(file.name, NOT_SAVED + " (It could not be shown: " + err.message + ")");
    }
  }

  function showSavedNote(fromName) {
    const when = utcMinute(state.analysedAt);
    $("saved-note").textContent = `Opened from ${fromName}: the result as it was saved` + (when ? `, analysed ${when}` : "") + ". Nothing was analysed again.";
    $("saved-note").hidden = false;
  }

  function pickItem(index) {
    const item = state.batch.items[index];
    if (!isFinished(item)) return;
    state.batch.picked = index;
    showItem(item);
    drawBatch();
  }

  function hideBatch() {
    state.batch = null;
    $("batch").hidden = true;
  }

  function drawBatch() {
    const batch = state.batch;
    const finished = batch.items.filter(isFinished).length;
    const counts = {};
    for (const item of batch.items) {
      if (item.status === "done") counts[item.analysis.result.verdict.label] = (counts[item.analysis.result.verdict.label] || 0) + 1;
    }
    const summary = Object.entries(counts).map(([label, n]) => `${n} ${LABEL_WORDS[label].toLowerCase()}`);
    const failed = batch.items.filter((item) => item.status === "failed").length;
    if (failed) summary.push(`${failed} not analysed`);
    $("batch-summary").textContent = `${finished} of ${batch.items.length} files analysed` + (summary.length ? ": " + summary.join(", ") : "");
    if (finished === batch.items.length) {
      const saved = batch.items.map((item) => ({
        file_name: item.file.name,
        analysed_at: item.analysis ? item.analysis.analysedAt || null : null,
        file: item.analysis ? item.analysis.file || null : null,
        result: item.analysis ? item.analysis.result : null,
        error: item.error,
      }));
      offerJson($("batch-download"), saved, "deepshield-results.json");
    } else {
      $("batch-download").hidden = true;
    }
    const shown = batch.picked !== null ? batch.picked : batch.items.reduce((last, item, i) => (isFinished(item) ? i : last), -1);
    $("batch-list").replaceChildren(
      ...batch.items.map((item, i) => {
        const verdict = item.status === "done" ? item.analysis.result.verdict : null;
        const scored = verdict !== null && verdict.probability !== null && verdict.probability !== undefined;
        const declared = verdict ? declaredGenerativeText(item.analysis.result.metadata) : null;
        const status = verdict
          ? el("span", {}, [
            ...(declared ? [el("span", { class: "declared-tag", "data-role": "declared-tag", title: declared, text: "Declares AI" })] : []),
            el("span", { class: "label " + verdict.label, text: LABEL_WORDS[verdict.label] }),
          ])
          : el("span", { class: "muted", text: { waiting: "Waiting", running: "Analysing…", failed: "Not analysed" }[item.status] });
        const row = el("button", {
          type: "button", class: "batch-row" + (i === shown ? " selected" : ""), "data-role": "batch-row",
          "data-status": item.status, "aria-pressed": i === shown ? "true" : "false",
          title: scored
            ? `${probabilityText(verdict.probability)} probability of manipulation; ` + syntheticText(verdict.synthetic_probability, null, verdict.verdict_driver)
            : "",
        }, [
          el("span", { class: "file-name", text: item.file.name }),
          status,
          el("span", { class: "batch-score", text: scored ? scorePct(verdict.probability) : "" }),
        ]);
        row.addEventListener("click", () => pickItem(i));
        return row;
      })
    );
    $("batch").hidden = false;
  }

  function formData(file) {
    const form = new FormData();
    form.append("file", file, file.name);
    return form;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function analyseAsJob(file, run, span) {
    showProgress(file.name, 0, "Uploading…");
    const select = $("frames-select");
    const query = new URLSearchParams();
    if (select.selectedIndex > 0) query.set("frames", select.value); // else the server's default
    const { start, end } = span || chosenSpan();
    if (start !== null) query.set("start_s", String(start));
    if (end !== null) query.set("end_s", String(end));
    const search = query.toString();
    state.uploading = true;
    offerCancel();
    let job;
    try {
      job = await api("/v1/jobs" + (search ? "?" + search : ""), { method: "POST", body: formData(file) });
    } finally {
      if (run === state.run) state.uploading = false;
      offerCancel();
    }
    if (run !== state.run) {  // another file was chosen, or Cancel pressed, during the upload
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
    while (job.status === "queued" || job.status === "running") {
      if (run !== state.run) {
        cancelJob(job.id);
        return null;
      }
      const stage = job.status === "running" ? capitalise(job.stage) + "…" : polls > 0 ? "Waiting for a free worker…" : "Starting…";
      showProgress(file.name, job.progress, stage);
      await sleep(POLL_MS);
      job = await api("/v1/jobs/" + encodeURIComponent(job.id));
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

  const capitalise = (text) => (text ? text.charAt(0).toUpperCase() + text.slice(1) : "");

  // ---------------------------------------------------------------- results: shared
  function renderVerdict(result, what, fileName) {
    const verdict = result.verdict;
    const box = $("verdict");
    box.className = "verdict " + verdict.label;
    $("result-file").textContent = fileName ? `Result for ${fileName}` : "";
    $("verdict-label").textContent = verdict.headline;
    $("verdict-reason").textContent =
      verdict.label === "no_face"
        ? `Deepfake Shield checks faces and found none it could analyse in this ${what}. Try a sharper file, or one where faces are larger and turned towards the camera.`
        : capitalise(verdict.reason) + ".";
    $("verdict-scope").textContent = result.scope;
    const declared = declaredGenerativeText(result.metadata);
    $("verdict-declared").textContent = declared || "";
    $("verdict-declared").hidden = !declared;
    const score = $("verdict-score");
    if (verdict.probability === null || verdict.probability === undefined) {
      score.replaceChildren();
    } else {
      score.replaceChildren(
        document.createTextNode(scorePct(verdict.probability)),
        el("small", { text: "probability of manipulation" }),
        el("small", {
          "data-role": "verdict-synthetic",
          text: syntheticText(verdict.synthetic_probability, null, verdict.verdict_driver),
        }),
      );
    }
  }

  function renderFacts(target, facts) {
    target.replaceChildren(
      ...facts.filter(([, value]) => value !== null && value !== undefined && value !== "").map(([name, value]) => el("div", {}, [el("dt", { text: name }), el("dd", { text: String(value) })]))
    );
  }

  // A link that saves `saved` as a JSON file (the page's object URL it held before is released).
  function offerJson(link, saved, name) {
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([JSON.stringify(saved, null, 2)], { type: "application/json" }));
    link.download = name;
    link.hidden = false;
  }

  // The whole result (scores, verdict, crops and heatmaps as data URLs) saved as shown, to keep or
  // share: the server keeps no copy.
  function offerDownload(result, file, fileName) {
    const name = (fileName || "result").replace(/\.[^.]*$/, "") + ".deepshield.json";
    offerJson($("result-download"), { file_name: fileName, analysed_at: state.analysedAt, file: file || null, result: result }, name);
  }

  // "2026-12-05 19:30 UTC" from an ISO time; null: not known (a result saved before times were kept).
  const utcMinute = (iso) => (iso ? iso.slice(0, 16).replace("T", " ") + " UTC" : null);

  // A printed (or PDF) copy of the result as shown, for a case file: the page's own layout without the
  // upload controls (style.css, @media print), headed by what was analysed, when and by which model.
  function offerPrint(result, fileName) {
    $("print-header").textContent =
      `Deepfake Shield report · ${fileName || "file"} · analysed ${utcMinute(state.analysedAt) || "at a time not recorded"} · model ${result.model}`;
    $("result-print").hidden = false;
  }

  function printResult() {
    $("file-details").open = true; // the file's size, SHA-256 and the model's thresholds belong on paper
    window.print();
  }

  function renderFileFacts(result, file, fileName) {
    const band = result.inconclusive;
    renderFacts($("file-facts"), [
      ["File", fileName || (file && file.name)],
      ["Size", file && formatBytes(file.size_bytes)],
      ["SHA-256", file && file.sha256],
      ["Model", result.model],
      ["Threshold", pct(result.threshold, 1)],
      ["Inconclusive", `${pct(band.low, 1)} to ${pct(band.high, 1)}`],
      ["Synthetic-face threshold",
        result.synthetic_threshold === null ? "not available in this model" : pct(result.synthetic_threshold, 1)],
      ["Analysis time", `${(result.elapsed_ms / 1000).toFixed(2)} s`],
      ...metadataFacts(result.metadata),
    ]);
  }

  // What the file says about itself (README "Web app"): shown for the reader, never scored.
  function metadataFacts(meta) {
    if (!meta) return [];
    const facts = [
      ["Camera (metadata)", meta.camera],
      ["Software (metadata)", meta.software],
      ["Date in the file", meta.created],
      ["Location", meta.has_location ? "in the file's metadata (not shown here)" : null],
      ["AI-generator settings", meta.generator_settings.length ? `found in the metadata (${meta.generator_settings.join(", ")})` : null],
      ...credentialsFacts(meta),
      ["Declared source", meta.declared_source ? `${meta.declared_source.meaning} (${meta.declared_source.code}; ${sourcePlace(meta.declared_source)})` : null],
    ].filter(([, value]) => value);
    return facts.length ? facts : [["Metadata", "none found (sites and apps often remove it)"]];
  }

  function sourcePlace(source) {
    if (source.declared_in === "xmp") return "in its XMP metadata, unsigned";
    return source.in_ingredient ? "in the Content Credentials of a file it was made from" : "in its Content Credentials";
  }

  // The C2PA SDK's reading of the file's Content Credentials, in words (deepshield.media.provenance).
  function credentialsState(cred) {
    const signer = cred.signed_by || "the signer";
    return {
      trusted: `signature trusted: the file is as ${signer} signed it, and ${cred.trust_anchors} vouch for the signer`,
      valid: cred.trust_anchors
        ? `signature valid: the file is as ${signer} signed it, but ${cred.trust_anchors} do not vouch for the signer`
        : `signature valid: the file is as ${signer} signed it; the signer was not checked against a trust list`,
      invalid: "signature invalid: the file changed after it was signed, or the signature does not hold",
      unreadable: "present, but it could not be read",
    }[cred.state];
  }

  function credentialsFacts(meta) {
    const cred = meta.credentials;
    if (!cred) {  // a result saved before Content Credentials were read only knew that a manifest was there
      return [["Content Credentials (C2PA)", meta.content_credentials ? "a manifest is present (not verified)" : null]];
    }
    return [
      ["Content Credentials (C2PA)", credentialsState(cred)],
      ["Signed by (C2PA)", cred.signed_by && (cred.signed_at ? `${cred.signed_by}, ${cred.signed_at}` : cred.signed_by)],
      ["Made with (C2PA)", cred.made_with],
      ["Actions (C2PA)", cred.actions.join(", ")],
      ["Made from (C2PA)", (cred.ingredients || []).join(", ")],
      ["C2PA problems", cred.problems.join("; ")],
    ];
  }

  // Beside the verdict when the file says generative AI made or edited it: a claim, never a score.
  function declaredGenerativeText(meta) {
    const source = meta && meta.declared_source;
    if (!source || !source.generative_ai) return null;
    const claim = "This is the file's own claim, not part of the scores.";
    if (source.declared_in === "xmp") {
      return `The file declares “${source.meaning}” in its XMP metadata (unsigned: easily added or removed). ${claim}`;
    }
    const state = credentialsState(meta.credentials);
    return source.in_ingredient
      ? `The file's Content Credentials (${state}) say it was made from a file that declares “${source.meaning}”. ${claim}`
      : `The file declares “${source.meaning}” in its Content Credentials (${state}). ${claim}`;
  }

  // ---------------------------------------------------------------- results: image
  function renderImage(result, fileName) {
    $("result").hidden = false;
    $("image-result").hidden = false;
    renderVerdict(result, "image", fileName);
    renderFileFacts(result, result.file, fileName);
    offerDownload(result, result.file, fileName);
    offerPrint(result, fileName);

    const stage = $("photo-stage");
    const img = $("photo");
    stage.querySelectorAll(".face-box").forEach((node) => node.remove());
    img.src = result.preview_jpeg || "";
    for (const face of result.faces) {
      const [x0, y0, x1, y1] = face.box;
      const colour = scoreColour(face.probability);
      const box = el("div", { class: "face-box", "data-face": String(face.index), title: `Face ${face.index + 1}: ${probabilityText(face.probability)} probability of manipulation` });
      box.style.left = (100 * x0 / result.width).toFixed(3) + "%";
      box.style.top = (100 * y0 / result.height).toFixed(3) + "%";
      box.style.width = (100 * (x1 - x0) / result.width).toFixed(3) + "%";
      box.style.height = (100 * (y1 - y0) / result.height).toFixed(3) + "%";
      box.style.borderColor = colour;
      const label = el("div", { class: "face-box-label" + (y0 / result.height < 0.06 ? " below" : ""), text: `${face.index + 1} · ${scorePct(face.probability)}` });
      label.style.background = colour;
      box.append(label);
      box.addEventListener("mouseenter", () => highlight(face.index, true));
      box.addEventListener("mouseleave", () => highlight(face.index, false));
      box.addEventListener("click", () => {
        const card = document.querySelector(`.face-card[data-face="${face.index}"]`);
        if (card) card.scrollIntoView({ behavior: "smooth", block: "nearest" });
      });
      stage.append(box);
    }

    const faces = $("faces");
    if (!result.faces.length) {
      faces.replaceChildren(el("div", { class: "no-face", "data-role": "no-face" }, [
        el("strong", { text: "No face found. " }),
        document.createTextNode(
          `Nothing to score: the detector needs faces${state.limits ? ` at least ${state.limits.min_face_px} pixels wide` : ""}, reasonably sharp and not turned fully away.`
        ),
      ]));
      return;
    }
    const threshold = result.threshold;
    const band = result.inconclusive;
    faces.replaceChildren(
      ...result.faces.map((face) => {
        const colour = scoreColour(face.probability);
        const fill = el("div", { class: "meter-fill" });
        fill.style.width = pct(face.probability, 1);
        fill.style.background = colour;
        const tick = el("div", { class: "meter-threshold", title: `threshold ${pct(threshold, 1)}` });
        tick.style.left = pct(threshold, 1);
        const zone = el("div", { class: "meter-band", title: `inconclusive from ${pct(band.low, 1)} to ${pct(band.high, 1)}` });
        zone.style.left = pct(band.low, 1);
        zone.style.width = pct(band.high - band.low, 1);
        const scoreNode = el("div", { class: "face-score" }, [document.createTextNode(scorePct(face.probability)), el("small", { text: "score" })]);
        scoreNode.style.color = colour;
        const card = el("article", { class: "face-card", "data-face": String(face.index) }, [
          el("div", { class: "face-head" }, [
            el("div", {}, [el("span", { class: "face-title", text: `Face ${face.index + 1}` }), el("span", { class: "label " + face.label, text: LABEL_WORDS[face.label] })]),
            scoreNode,
          ]),
          el("div", { class: "meter", title: `${probabilityText(face.probability)}; inconclusive from ${pct(band.low, 1)} to ${pct(band.high, 1)}, threshold ${pct(threshold, 1)}` }, [zone, fill, tick]),
          el("div", { class: "face-images" }, [
            el("figure", {}, [el("img", { src: face.crop_png, alt: `Face ${face.index + 1} as the model saw it` }), el("figcaption", { text: "Face as analysed" })]),
            el("figure", {}, [el("img", { src: face.heatmap_png, alt: `Heatmap for face ${face.index + 1}` }), el("figcaption", { text: "Heatmap: red = looks manipulated" })]),
          ]),
          el("div", { class: "face-meta", text: `Probability ${probabilityText(face.probability)} · inconclusive ${pct(band.low, 0)}–${pct(band.high, 0)} · detection confidence ${pct(face.detection_score)}${face.turned_deg ? ` · turned ${face.turned_deg}° to be read upright` : ""}` }),
          el("div", {
            class: "face-meta", "data-role": "synthetic-score",
            text: syntheticText(face.synthetic_probability, face.synthetic_label, face.verdict_driver),
          }),
        ]);
        card.style.borderLeftColor = colour;
        card.addEventListener("mouseenter", () => highlight(face.index, true));
        card.addEventListener("mouseleave", () => highlight(face.index, false));
        return card;
      })
    );
  }

  function highlight(index, on) {
    document.querySelectorAll(`[data-face="${index}"]`).forEach((node) => node.classList.toggle("highlight", on));
  }

  // ---------------------------------------------------------------- results: video
  function niceStep(span, maxTicks) {
    const steps = [0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900];
    return steps.find((step) => span / step <= maxTicks) || steps[steps.length - 1];
  }

  function renderVideo(result, file, fileName, source) {
    $("result").hidden = false;
    $("video-result").hidden = false;
    renderVerdict(result, "video", fileName);
    renderFileFacts(result, file, fileName);
    offerDownload(result, file, fileName);
    offerPrint(result, fileName);
    const v = result.video;
    const part = result.analysed;
    const partFacts = part.whole
      ? []
      : [["Part analysed", `${formatTime(part.start_s, v.duration_s)} to ${part.end_s === null ? "the end" : formatTime(part.end_s, v.duration_s)}`]];
    renderFacts($("video-facts"), [
      ["Duration", `${v.duration_s.toFixed(1)} s`],
      ...partFacts,
      ["Resolution", `${v.width} × ${v.height}`],
      ["Frame rate", `${v.fps.toFixed(2)} fps`],
      ["Codec", v.codec],
      ["Frames analysed", `${result.sampled_frames}`],
      ["Faces tracked", `${result.tracks.length}`],
    ]);
    $("video-rule").textContent = "How the verdict is made: " + result.rule + ".";
    drawTimeline(result, source);
  }

  const trackColour = (i) => TRACK_COLOURS[i % TRACK_COLOURS.length];

  function drawTimeline(result, source) {
    const W = 860, H = 300, L = 48, R = 84, T = 16, B = 36;
    const times = result.timeline.map((p) => p.timestamp_s);
    // The axis covers what was analysed: the whole video, or the part asked for.
    const part = result.analysed;
    const from = part.start_s;
    const to = part.end_s !== null && !part.whole ? part.end_s : Math.max(result.video.duration_s || 0, times.length ? Math.max(...times) : 0);
    const span = Math.max(to - from, 0.1);
    const x = (t) => L + (W - L - R) * ((t - from) / span);
    const y = (p) => T + (H - T - B) * (1 - p);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Probability of manipulation over time for each face" });

    // The inconclusive band behind everything: scores in it are too close to the threshold to call.
    const band = result.inconclusive;
    root.append(svg("rect", { class: "band", x: L, width: W - L - R, y: y(band.high), height: Math.max(0, y(band.low) - y(band.high)) }));
    root.append(svg("text", { class: "band-label", x: L + 6, y: y(band.high) + 12, text: "inconclusive" }));
    for (const p of [0, 0.25, 0.5, 0.75, 1]) {
      root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(p), y2: y(p) }));
      root.append(svg("text", { class: "tick", x: L - 8, y: y(p) + 4, "text-anchor": "end", text: pct(p) }));
    }
    const step = niceStep(span, 8);
    for (let t = Math.ceil(from / step - 1e-9) * step; t <= from + span + 1e-9; t += step) {
      root.append(svg("line", { class: "axis", x1: x(t), x2: x(t), y1: H - B, y2: H - B + 5 }));
      root.append(svg("text", { class: "tick", x: x(t), y: H - B + 18, "text-anchor": "middle", text: formatTime(t, span) }));
    }
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    root.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));

    // Sampled frames without any face: small grey marks on the time axis.
    for (const point of result.timeline) {
      if (point.faces === 0) {
        root.append(svg("rect", { class: "no-face-mark", x: x(point.timestamp_s) - 2, y: H - B - 6, width: 4, height: 6 }, [svg("title", { text: `${formatTime(point.timestamp_s, span)}: no face in this frame` })]));
      }
    }

    const threshold = result.threshold;
    root.append(svg("line", { class: "threshold", x1: L, x2: W - R, y1: y(threshold), y2: y(threshold) }));
    root.append(svg("text", { class: "threshold-label", x: W - R + 6, y: y(threshold) - 2, text: "threshold" }));
    root.append(svg("text", { class: "threshold-label", x: W - R + 6, y: y(threshold) + 11, text: pct(threshold, threshold * 100 % 1 ? 1 : 0) }));

    const tip = $("timeline-tip");
    tip.hidden = true;
    result.tracks.forEach((track, i) => {
      const colour = trackColour(i);
      const name = `Face ${i + 1}`;
      const points = track.points.map((p) => `${x(p.timestamp_s).toFixed(1)},${y(p.probability).toFixed(1)}`).join(" ");
      const group = svg("g", { "data-track": String(track.track_id) });
      if (track.points.length > 1) group.append(svg("polyline", { class: "track" + (track.counted ? "" : " uncounted"), points, stroke: colour }));
      for (const p of track.points) {
        const dot = svg("circle", { class: "point", cx: x(p.timestamp_s), cy: y(p.probability), r: 4, fill: colour, tabindex: "0", "aria-label": `${name} at ${formatTime(p.timestamp_s, span)}: ${probabilityText(p.probability)}` });
        const show = () => showTip(tip, dot, p, name, span);
        dot.addEventListener("mouseenter", show);
        dot.addEventListener("focus", show);
        dot.addEventListener("mouseleave", () => (tip.hidden = true));
        dot.addEventListener("blur", () => (tip.hidden = true));
        group.append(dot);
      }
      root.append(group);
    });
    if (!result.tracks.length) {
      root.append(svg("text", { class: "tick", x: (L + W - R) / 2, y: (T + H - B) / 2, "text-anchor": "middle", text: "No face found in any sampled frame" }));
    }
    $("timeline").replaceChildren(root, tip);
    $("tracks").replaceChildren(...result.tracks.map((track, i) => trackCard(track, i, result, span, source)));
  }

  // Hovering (or focusing) a point shows the face the model scored in that frame.
  function showTip(tip, dot, point, name, span) {
    tip.replaceChildren(
      el("img", { src: point.thumbnail_jpeg || "", alt: `${name} in the frame at ${formatTime(point.timestamp_s, span)}`, width: "96", height: "96" }),
      el("div", {}, [el("strong", { text: name }), document.createTextNode(` · ${formatTime(point.timestamp_s, span)} · frame ${point.frame_index}`)]),
      el("div", { text: `score ${probabilityText(point.probability)}` })
    );
    tip.hidden = false;
    const chart = $("timeline").getBoundingClientRect();
    const spot = dot.getBoundingClientRect();
    const left = Math.min(Math.max(0, spot.left - chart.left - 60), chart.width - 140);
    const above = spot.top - chart.top - tip.offsetHeight - 10;
    tip.style.left = left + "px";
    tip.style.top = (above >= 0 ? above : spot.bottom - chart.top + 10) + "px";
  }

  // Beside the timeline: who each line is (its most suspicious frame's face and heatmap), when it
  // was seen, and whether it counts towards the verdict.
  function trackCard(track, i, result, span, source) {
    const name = `Face ${i + 1}`;
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = trackColour(i);
    const when = track.first_seen_s === track.last_seen_s ? `at ${formatTime(track.first_seen_s, span)}` : `${formatTime(track.first_seen_s, span)} to ${formatTime(track.last_seen_s, span)}`;
    const seen = `Seen in ${track.frames_seen} of ${result.sampled_frames} frames, ${when}`;
    const card = el("article", { class: "track-card" + (track.counted ? "" : " uncounted"), "data-track": String(track.track_id) }, [
      el("div", { class: "track-head" }, [
        swatch,
        el("strong", { text: name }),
        el("span", { class: "label " + track.label, text: LABEL_WORDS[track.label] }),
        el("span", { class: "track-score", text: scorePct(track.score) }),
      ]),
      el("div", { class: "face-images" }, [
        el("figure", {}, [el("img", { src: track.thumbnail_png, alt: `${name} in its most suspicious frame` }), el("figcaption", { text: `Most suspicious frame (${formatTime(track.peak_timestamp_s, span)})` })]),
        el("figure", {}, [el("img", { src: track.heatmap_png, alt: `Heatmap for ${name}` }), el("figcaption", { text: "Heatmap: red = looks manipulated" })]),
      ]),
      el("div", { class: "face-meta", text: seen }),
      el("div", {
        class: "face-meta", "data-role": "synthetic-score",
        text: syntheticText(track.synthetic_score, track.synthetic_label, track.verdict_driver),
      }),
      el("div", { class: "face-meta" + (track.counted ? "" : " warning"), "data-role": "counted", text: track.counted ? "Counts towards the verdict" : `Does not count towards the verdict: ${track.not_counted_reason}` }),
      source ? closerButton(track, result, span, source) : null,
    ]);
    card.style.borderLeftColor = trackColour(i);
    const line = () => document.querySelector(`#timeline g[data-track="${track.track_id}"]`);
    card.addEventListener("mouseenter", () => line() && line().classList.add("highlight"));
    card.addEventListener("mouseleave", () => line() && line().classList.remove("highlight"));
    return card;
  }

  // "Look closer": the same file analysed again, its frames spread over the seconds around a track's
  // most suspicious frame (this once: the drop zone's part fields stay as they are for the next file).
  // Offered where that part is under half of what was analysed: otherwise there is little closer to see.
  const CLOSER_HALF_S = 2;

  function closerButton(track, result, span, source) {
    const part = result.analysed;
    const videoEnd = part.end_s !== null ? part.end_s : Math.max(result.video.duration_s, track.last_seen_s);
    const start = Math.max(part.start_s, Math.floor((track.peak_timestamp_s - CLOSER_HALF_S) * 10) / 10);
    const end = Math.min(videoEnd, Math.ceil((track.peak_timestamp_s + CLOSER_HALF_S) * 10) / 10);
    if (end - start > 0.5 * (videoEnd - part.start_s)) return null;
    const button = el("button", {
      type: "button", class: "result-print", "data-role": "look-closer",
      text: `Look closer: ${formatTime(start, span)} to ${formatTime(end, span)}`,
      title: "Analyse the seconds around this face's most suspicious frame again, with the frames chosen in the drop zone spread over them",
    });
    button.addEventListener("click", () => analyse(source.file, source.exampleFile, { start, end }));
    return el("div", { class: "face-meta" }, [button]);
  }

  // ---------------------------------------------------------------- wiring
  function wire() {
    const zone = $("dropzone");
    const input = $("file-input");
    $("choose-button").addEventListener("click", (event) => {
      event.stopPropagation();
      input.click();
    });
    zone.addEventListener("click", () => input.click());
    $("result-print").addEventListener("click", printResult);
    $("progress-cancel").addEventListener("click", cancelAnalysis);
    // The frame-count choice sits in the drop zone: using it must not open the file dialog.
    for (const choice of ["frames-choice", "span-choice"]) {
      for (const name of ["click", "keydown"]) $(choice).addEventListener(name, (event) => event.stopPropagation());
    }
    zone.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        input.click();
      }
    });
    const take = (files) => {
      const list = [...(files || [])];
      if (list.length === 1 && looksLikeSaved(list[0])) openSaved(list[0]);
      else if (list.length > 1) analyseAll(list);
      else if (list.length === 1) analyse(list[0]);
    };
    input.addEventListener("change", () => {
      take(input.files);
      input.value = "";
    });
    ["dragenter", "dragover"].forEach((name) =>
      zone.addEventListener(name, (event) => {
        event.preventDefault();
        zone.classList.add("dragging");
      })
    );
    ["dragleave", "dragend"].forEach((name) => zone.addEventListener(name, () => zone.classList.remove("dragging")));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      take(event.dataTransfer && event.dataTransfer.files);
    });
    // Dropping a file elsewhere on the page must not navigate away from it.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
    // Paste an image from the clipboard.
    window.addEventListener("paste", (event) => {
      const item = [...((event.clipboardData && event.clipboardData.items) || [])].find((i) => i.kind === "file");
      if (item) analyse(item.getAsFile());
    });
    $("api-key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("api-key-input").value.trim();
      if (key) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
      $("message").hidden = true;
      loadServerInfo();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    wire();
    loadServerInfo();
    loadExamples();
  });
})();
