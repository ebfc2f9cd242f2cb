/* Several files at once: analysed one after another and listed with their verdicts. */
import { $, el, focusIfLost, offerFile, offerJson, revealIfOffScreen } from "./dom.js";
import { fetchAnalysis, refusal, render } from "./flow.js";
import { drivingScore, labelWords, scorePct, syntheticText } from "./format.js";
import { stopWaiting } from "./jobs.js";
import { clearOutput, clearResult, errorSentence, setBusy, showMessage } from "./messages.js";
import { declaredGenerativeText } from "./provenance.js";
import { showSavedNote } from "./saved.js";
import { markExample, serverInfoKnown } from "./startup.js";
import { state } from "./state.js";

// Analysed one after another and listed with their verdicts. The result shown is the latest
// finished one, until a row is picked: then that row's stays.
// The list as a spreadsheet: one row per file, the columns of `deepshield scan --format csv` that a
// result here has (probabilities as 0-1 numbers), the file's SHA-256 among them for matching it later.
const CSV_COLUMNS = ["file_name", "status", "kind", "verdict", "probability", "synthetic_probability", "verdict_driver",
  "faces", "cautions", "reason", "part", "declared_source", "declared_in", "credentials", "sha256", "error"];

// Where the source type is declared, as scan's `declared_in` column says it (DeclaredSource.row_place).
const declaredIn = (source) => (source.declared_in === "xmp" ? "xmp" : source.in_ingredient ? "ingredient" : "content_credentials");

// An image's faces, a video's counted people: those that take part in its verdict, as scan's `faces` and
// `cautions` count them (its stray one- or two-frame tracks are not).
const judged = (result) => (result.kind === "video" ? result.tracks.filter((track) => track.counted) : result.faces);

export function batchCsv(items) {
  // A text starting as a formula (a file named "=HYPERLINK(...).jpg") is kept as text with a leading
  // quote: a spreadsheet opening the list would otherwise run it.
  const cell = (value) => {
    let text = value === null || value === undefined ? "" : String(value);
    if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = "'" + text;
    return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  };
  const rows = items.map((item) => {
    const result = item.analysis ? item.analysis.result : null;
    const verdict = result ? result.verdict : null;
    const meta = (result && result.metadata) || {};
    const file = (item.analysis && item.analysis.file) || {};
    return [
      item.file.name, result ? "ok" : "error", result && result.kind, verdict && verdict.label,
      verdict && verdict.probability, verdict && verdict.synthetic_probability, verdict && verdict.verdict_driver,
      result && judged(result).length,
      result && ([...new Set(judged(result).flatMap((face) => face.cautions || []))].join("; ") || null),
      verdict && verdict.reason,
      result && result.analysed ? result.analysed.part : null,
      meta.declared_source && meta.declared_source.code, meta.declared_source && declaredIn(meta.declared_source),
      meta.credentials && meta.credentials.state,
      file.sha256, item.error,
    ];
  });
  return [CSV_COLUMNS, ...rows].map((row) => row.map(cell).join(",")).join("\r\n") + "\r\n";
}

export async function analyseAll(files) {
  const run = ++state.run;
  stopWaiting();
  clearOutput();
  markExample(null);
  state.batch = { items: files.map((file) => ({ file, status: "waiting", analysis: null, error: null })), picked: null };
  drawBatch();
  revealIfOffScreen($("batch"));
  setBusy(true);
  try {
    await serverInfoKnown();
    if (run !== state.run) return;
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
      const last = item === state.batch.items[state.batch.items.length - 1];
      if (item.status === "failed" && !last) {
        // Its row says why; an alert shown now would vanish as the next file starts (read out, not seen).
        $("announce").textContent = `${item.file.name}: not analysed: ${item.error}`;
      } else if (state.batch.picked === null) {
        showItem(item);
        focusIfLost($("result-file")); // Cancel, which had it, went with the progress panel
      }
      drawBatch();
    }
  } finally {
    if (run === state.run) setBusy(false);
  }
}

// The score that made the row's verdict, named when it is the synthetic-face score.
function rowScore(result) {
  const verdict = result.verdict;
  return drivingScore(verdict.probability, verdict.synthetic_probability, verdict.verdict_driver, verdict.label, result).short;
}

export const isFinished = (item) => item.status === "done" || item.status === "failed";

export function showItem(item) {
  clearResult();
  if (item.status === "done") {
    render(item.analysis, item.file.name, item.openedFrom ? null : { file: item.file, exampleFile: null });
    if (item.openedFrom) showSavedNote(item.openedFrom);
  } else if (item.status === "failed") showMessage(item.file.name, item.error);
}

function pickItem(index) {
  const item = state.batch.items[index];
  if (!isFinished(item)) return;
  const rowTop = () => $("batch-list").children[index].getBoundingClientRect().top;
  const before = rowTop();
  state.batch.picked = index;
  showItem(item);
  drawBatch();
  // A failed file's message appears above the list (and goes with the next pick): the list is scrolled back
  // so that the row clicked stays under the pointer, instead of every row moving by the message's height.
  window.scrollBy(0, rowTop() - before);
}

export function hideBatch() {
  state.batch = null;
  $("batch").hidden = true;
}

export function drawBatch() {
  const batch = state.batch;
  const finished = batch.items.filter(isFinished).length;
  // Counted by the words each row's badge says: an AI-generated face's call apart from the face swaps'.
  const counts = {};
  for (const item of batch.items) {
    if (item.status !== "done") continue;
    const verdict = item.analysis.result.verdict;
    const words = labelWords(verdict.label, verdict.verdict_driver).toLowerCase();
    counts[words] = (counts[words] || 0) + 1;
  }
  const verdicts = Object.entries(counts).map(([words, n]) => `${n} ${words}`);
  const analysed = batch.items.filter((item) => item.status === "done").length;
  const failed = finished - analysed;
  // Files that could not be read are not counted as analysed: "5 of 8 files analysed (...); 3 could not be analysed".
  $("batch-summary").textContent = `${analysed} of ${batch.items.length} files analysed`
    + (verdicts.length ? ` (${verdicts.join(", ")})` : "") + (failed ? `; ${failed} could not be analysed` : "");
  if (finished === batch.items.length) {
    const saved = batch.items.map((item) => ({
      file_name: item.file.name,
      analysed_at: item.analysis ? item.analysis.analysedAt || null : null,
      file: item.analysis ? item.analysis.file || null : null,
      result: item.analysis ? item.analysis.result : null,
      error: item.error,
    }));
    offerJson($("batch-download"), saved, "deepshield-results.json");
    offerFile($("batch-table"), batchCsv(batch.items), "text/csv", "deepshield-results.csv");
  } else {
    $("batch-download").hidden = true;
    $("batch-table").hidden = true;
  }
  const shown = batch.picked !== null ? batch.picked : batch.items.reduce((last, item, i) => (isFinished(item) ? i : last), -1);
  // The rows are drawn again as files finish and when one is picked: the focused one keeps the focus.
  const focused = [...$("batch-list").children].indexOf(document.activeElement);
  $("batch-list").replaceChildren(
    ...batch.items.map((item, i) => {
      const verdict = item.status === "done" ? item.analysis.result.verdict : null;
      const scored = verdict !== null && verdict.probability !== null && verdict.probability !== undefined;
      const declared = verdict ? declaredGenerativeText(item.analysis.result.metadata) : null;
      const status = verdict
        ? el("span", {}, [
          ...(declared ? [el("span", { class: "declared-tag", "data-role": "declared-tag", title: declared, text: "Declares AI" })] : []),
          el("span", { class: "label " + verdict.label, text: labelWords(verdict.label, verdict.verdict_driver) }),
        ])
        : el("span", { class: "muted", text: { waiting: "Waiting", running: "Analysing…", failed: "Not analysed" }[item.status] });
      const row = el("button", {
        type: "button", class: "batch-row" + (i === shown ? " selected" : ""), "data-role": "batch-row",
        "data-status": item.status, "aria-current": i === shown ? "true" : null,
        "aria-disabled": isFinished(item) ? null : "true", // nothing to show until it is analysed
        title: scored
          ? `Face-swap score ${scorePct(verdict.probability, item.analysis.result, 1)}; `
            + syntheticText(verdict.synthetic_probability, null, verdict.verdict_driver, item.analysis.result)
          : "",
      }, [
        el("span", { class: "file-name", text: item.file.name }),
        status,
        item.status === "failed"
          ? el("span", { class: "batch-error", "data-role": "batch-error", title: item.error, text: item.error })
          : el("span", { class: "batch-score", "data-role": "batch-score", text: scored ? rowScore(item.analysis.result) : "" }),
      ]);
      row.addEventListener("click", () => pickItem(i));
      return row;
    })
  );
  if (focused >= 0) $("batch-list").children[focused].focus();
  $("batch").hidden = false;
}
