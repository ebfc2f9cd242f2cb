/* What the page loads at start: the server's limits and terms, the model card, the examples. */
import { api, ApiFailure, KEY_STORAGE, showKeyPanel } from "./api.js";
import { $, el } from "./dom.js";
import { analyseIn, startRun } from "./flow.js";
import { aucText, formatBytes, NO_SYNTHETIC, pct } from "./format.js";
import { clearOutput, showError, showProgress } from "./messages.js";
import { state } from "./state.js";

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

// /healthz's answer taken in. Asked at start; one not had then (a proxy's 502 while the server restarted) left
// the limits unknown for good (an oversized file uploaded whole before the server refused it) and the frame
// and part choices hidden until a reload: it is asked again, quietly, after a growing wait and before each
// analysis, until answered.
let healthAsked = null; // the request in flight, shared
let healthRetry = null; // the timer of the next quiet try
let healthWait = 2000; // ms before the next quiet try: doubled each time, up to a minute

// `quiet`: given up after 10 s (an analysis waits on it).
function askHealth(quiet = false) {
  healthAsked ||= api("healthz", quiet ? { signal: AbortSignal.timeout(10000) } : undefined)
    .then((health) => {
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
    })
    .finally(() => {
      healthAsked = null;
    });
  return healthAsked;
}

// Asked again without a word: whatever the reader looks at (a result, its own error) stays. Answered, the
// start's error goes, and the model's details are shown again with the server's terms.
async function askHealthQuietly() {
  clearTimeout(healthRetry);
  try {
    await askHealth(true);
  } catch (err) {
    if (!(err instanceof ApiFailure && err.status === 401)) { // a key is asked for: sent, it asks again itself
      healthRetry = setTimeout(askHealthQuietly, healthWait);
      healthWait = Math.min(healthWait * 2, 60000);
    }
    return;
  }
  const box = $("message");
  if (!box.hidden && box.dataset.startup) box.hidden = true;
  await loadModelInfo(); // its pills name the thresholds the answer holds
}

// Before an analysis: what the server owns, if the page has it not yet (limits to refuse a file by).
export async function serverInfoKnown() {
  if (state.limits === null) await askHealthQuietly();
}

export async function loadServerInfo() {
  clearTimeout(healthRetry);
  try {
    await askHealth();
  } catch (err) {
    showError(err);
    $("message").dataset.startup = "true"; // showMessage drops it: a later message is not this one
    if (!(err instanceof ApiFailure && err.status === 401)) healthRetry = setTimeout(askHealthQuietly, healthWait);
  }
  await loadModelInfo();
}

async function loadModelInfo() {
  try {
    const card = await api("v1/model");
    state.card = card;
    const info = $("model-info");
    const pills = [el("span", { class: "pill", text: `Model ${card.name} ${card.version}`, "data-role": "model-name" })];
    // The thresholds and bands verdicts are called with (the server's, as in every result), not the card's own.
    const terms = state.terms;
    if (terms) {
      const band = terms.inconclusive;
      pills.push(
        // Named by their score: "Threshold 55.6%" beside a synthetic-face threshold did not say whose it was.
        el("span", { class: "pill", text: `Face-swap threshold ${pct(terms.threshold, 1)}`, "data-role": "threshold" }),
        el("span", { class: "pill", text: `Face-swap inconclusive ${pct(band.low, 1)}–${pct(band.high, 1)}`, "data-role": "band", title: band.fitted_on }),
        el("span", {
          class: "pill", "data-role": "synthetic-threshold",
          text: terms.synthetic_threshold !== null ? `Synthetic-face threshold ${pct(terms.synthetic_threshold, 1)}` : NO_SYNTHETIC,
        })
      );
      // Its band too: a face's "Synthetic-face score 50.0% (inconclusive)" beside a threshold of 46.2% alone
      // seemed to contradict it.
      const synthetic = terms.synthetic_inconclusive;
      if (synthetic) {
        pills.push(el("span", {
          class: "pill", "data-role": "synthetic-band", title: synthetic.fitted_on,
          text: `Synthetic-face inconclusive ${pct(synthetic.low, 1)}–${pct(synthetic.high, 1)}`,
        }));
      }
      // A soup's verdicts are called with the defaults: said beside the threshold they were called at.
      if (terms.calibrated === false) {
        pills.push(el("span", {
          class: "pill", "data-role": "not-calibrated", text: "Face-swap scores not calibrated",
          title: "Temperature 1 and threshold 50% are the defaults, not fitted: a score is no probability and the threshold was not chosen",
        }));
      }
    }
    info.replaceChildren(...pills);
    loadModelRecord().catch(() => {}); // optional: the pills stand without it
    $("api-key-panel").hidden = true;
    $("api-key-refused").hidden = true;
  } catch (err) {
    $("api-key-refused").hidden = !(err.status === 401 && localStorage.getItem(KEY_STORAGE));
    $("model-info").replaceChildren(el("span", { class: "muted", text: err.status === 401 ? "Model details need the API key" : "Model details unavailable" }));
  }
}

// The shipped card's labelled sets in plain words (its README and docs/model-study.md describe them; the
// record names a set by its folder only, which tells a reader nothing), by folder name.
const SET_ABOUT = {
  "dfdc-sample": "videos from the Deepfake Detection Challenge sample, real and face-swapped",
  "modern-swaps": "photos and videos from six recent public face-swap tools, and the real faces they started from",
  "face-edits": "photos with part of the face edited by hand, and real photos",
};

// The model's own figures on real labelled media (GET /v1/model/record), so that a reader knows what it
// catches and what it misses before trusting a verdict.
async function loadModelRecord() {
  const record = await api("v1/model/record");
  // A model trained without benchmarks still has its validation figures (deepshield model prints them).
  if (!record.benchmarks.length && record.validation_auc === null && record.synthetic_holdout_auc === null) return;
  const auc = (figure) => !figure ? "—" : aucText(figure.value, figure.low, figure.high);
  // A real file the synthetic-face score flags is flagged too: its own share beside the face-swap score's.
  const flagged = (set) => pct(set.real_flagged, 1) +
    (set.synthetic_real_flagged !== null && set.synthetic_real_flagged !== undefined ? ` · ${pct(set.synthetic_real_flagged, 1)} by the synthetic-face score` : "");
  // A set's name as the card gives it (the key to its figures elsewhere), its description under it when known.
  const setName = (set) => {
    const about = SET_ABOUT[set.labelled_set.split("/").pop()];
    const name = set.labelled_set + (set.caution ? " †" : "");
    return about ? [name, el("span", { class: "record-about", "data-role": "record-about", text: about })] : name;
  };
  const rows = record.benchmarks.map((set) => [setName(set), auc(set.file_auc), auc(set.face_auc), flagged(set)]);
  if (record.validation_auc !== null) {
    // A run validated on prepared datasets' fakes said "synthesised blends" it never made.
    const validation = record.validation_fakes === "synthesised fakes" ? "its own synthesised blends (validation)"
      : `its validation split: real + ${record.validation_fakes}`;
    rows.push([validation, "—", auc({ value: record.validation_auc, low: null }), pct(record.validation_real_flagged, 1)]);
  }
  if (record.synthetic_holdout_auc !== null) {
    rows.push(["fully AI-generated faces: unseen faces of the generator it learned (synthetic-face score)", "—",
      auc(record.synthetic_holdout_auc), pct(record.synthetic_real_flagged, 1)]);
  }
  $("model-record-rows").replaceChildren(
    ...rows.map((cells) => el("tr", { "data-role": "record-row" }, cells.map((cell, i) => el(i ? "td" : "th", { scope: i ? null : "row" }, cell))))
  );
  $("model-record-note").textContent =
    "AUC: how often a fake file (or face) scores above a real one; 0.5 is chance, 1 always. In brackets, a 95% interval: " +
    "these sets are small. Reals flagged: the share of a set's real files (validation: real faces) at or above the " +
    "threshold. " +
    (record.benchmarks.length
      ? "The labelled sets chose this model's version and threshold, so they flatter it; fakes from tools it has not met can fare worse, and " +
        "its own synthesised blends say little about real swaps."
      : "No real media measured this model: its own synthesised blends say little about real deepfakes.") +
    record.benchmarks.filter((set) => set.caution).map((set) => ` † ${set.labelled_set}: ${set.caution}.`).join("");
  $("model-record").hidden = false;
}

export async function loadExamples() {
  let examples = [];
  try {
    const response = await fetch("static/examples/index.json");
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
      // Named once: its title and tag ("Real photo", "Real photo") were read out twice.
      const label = `${example.title}: an example ${example.kind === "video" ? "video" : "photo"}, ${truth}`;
      const button = el("button", { type: "button", class: "example", title: example.description, "aria-label": label, "data-file": example.file, "data-truth": truth }, [
        el("div", { class: "thumb" }, thumb ? [el("img", { src: "static/examples/" + thumb, alt: "" })] : []),
        el("span", { text: example.title }),
        el("span", { class: "tag" }, [el("span", { class: "truth " + truth, text: truth === "manipulated" ? "Manipulated" : "Real" }), document.createTextNode(example.kind === "video" ? " video" : " photo")]),
      ]);
      button.addEventListener("click", () => runExample(example));
      return button;
    })
  );
}

export function markExample(file) {
  state.example = file;
  document.querySelectorAll("button.example").forEach((button) => {
    const selected = button.getAttribute("data-file") === file;
    button.classList.toggle("selected", selected);
    button.setAttribute("aria-pressed", selected ? "true" : "false");
    if (!selected) button.blur();
  });
}

// Its file is fetched first, as an analysis of its own: on a slow line nothing showed meanwhile, and an
// example arriving after the reader had chosen a file of their own was analysed and shown over it.
async function runExample(example) {
  const run = startRun(example.file);
  showProgress(example.file, null, "Loading the example…");
  try {
    const response = await fetch("static/examples/" + example.file);
    if (!response.ok) throw new ApiFailure(response.status, "example", "The example file could not be loaded.");
    const blob = await response.blob();
    if (run !== state.run) return;
    const type = blob.type || (example.kind === "video" ? "video/mp4" : "image/jpeg");
    await analyseIn(run, new File([blob], example.file, { type }), example.file);
  } catch (err) {
    if (run !== state.run) return;
    clearOutput();
    showError(err, example.file);
  }
}
