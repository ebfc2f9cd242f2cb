/* What every result shows: the verdict, the file's facts, saving and printing. */
import { $, el, offerJson, renderFacts } from "./dom.js";
import { capitalise, drivingScore, formatBytes, pct, scorePct, syntheticText, utcMinute } from "./format.js";
import { declaredGenerativeText, metadataFacts } from "./provenance.js";
import { state } from "./state.js";

export function renderVerdict(result, fileName) {
  const verdict = result.verdict;
  const box = $("verdict");
  box.className = "verdict " + verdict.label;
  $("result-file").textContent = fileName ? `Result for ${fileName}` : "";
  $("verdict-label").textContent = verdict.headline;
  $("announce").textContent = `${fileName ? fileName + ": " : ""}${verdict.headline}`;
  // A no-face reason says why and what else holds (a TIFF's other pages, a part of a video, a reduced read).
  $("verdict-reason").textContent =
    capitalise(verdict.reason) +
    (verdict.label === "no_face" ? ". Try a sharper file, or one where faces are larger and turned towards the camera." : ".");
  $("verdict-scope").textContent = result.scope;
  const declared = declaredGenerativeText(result.metadata);
  $("verdict-declared").textContent = declared || "";
  $("verdict-declared").hidden = !declared;
  const score = $("verdict-score");
  if (verdict.probability === null || verdict.probability === undefined) {
    score.replaceChildren();
  } else {
    const driving = drivingScore(verdict.probability, verdict.synthetic_probability, verdict.verdict_driver, verdict.label, result);
    const generated = driving.measures === "AI-generated";
    score.replaceChildren(
      document.createTextNode(driving.text),
      el("small", { text: generated ? "synthetic-face score: probability the face is AI-generated" : "face-swap score: probability the face was swapped or edited" }),
      el("small", {
        "data-role": "verdict-synthetic",
        text: generated
          ? `Face-swap score ${scorePct(verdict.probability, result, 1)} · the synthetic-face score drives the verdict`
          : syntheticText(verdict.synthetic_probability, null, verdict.verdict_driver, result),
      }),
    );
  }
}

// The whole result (scores, verdict, crops and heatmaps as data URLs) saved as shown, to keep or
// share: the server keeps no copy.
export function offerDownload(result, file, fileName) {
  const name = (fileName || "result").replace(/\.[^.]*$/, "") + ".deepshield.json";
  offerJson($("result-download"), { file_name: fileName, analysed_at: state.analysedAt, file: file || null, result: result }, name);
}

// A printed (or PDF) copy of the result as shown, for a case file: the page's own layout without the
// upload controls (style.css, @media print), headed by what was analysed, when and by which model.
export function offerPrint(result, fileName) {
  $("print-header").textContent =
    `Deepfake Shield report · ${fileName || "file"} · analysed ${utcMinute(state.analysedAt) || "at a time not recorded"} · model ${result.model}`;
  $("result-print").hidden = false;
}

// The file's size, SHA-256 and the model's thresholds belong on paper, whether printed by the button or
// by the browser's own Print (beforeprint).
export function openForPrint() {
  $("file-details").open = true;
}

export function printResult() {
  openForPrint();
  window.print();
}

// An image's pixels as read: a JPEG or HEIC above the pixel limit is read at a fraction of its size.
function pixelsAnalysed(result) {
  if (result.kind !== "image") return null;
  const size = `${result.width} × ${result.height}`;
  const scale = result.decoded_scale || 1; // results saved before decoded_scale existed were read whole
  return scale > 1 ? `${size}: 1/${scale} of the file's width and height (it is above the pixel limit)` : size;
}

export function renderFileFacts(result, file, fileName) {
  const band = result.inconclusive;
  renderFacts($("file-facts"), [
    ["File", fileName || (file && file.name)],
    ["Size", file && formatBytes(file.size_bytes)],
    ["SHA-256", file && file.sha256],
    ["Pixels analysed", pixelsAnalysed(result)],
    ["Model", result.model],
    ["Threshold", pct(result.threshold, 1)],
    ["Inconclusive", `${pct(band.low, 1)} to ${pct(band.high, 1)}`],
    ["Synthetic-face threshold",
      result.synthetic_threshold === null ? "not available in this model" : pct(result.synthetic_threshold, 1)],
    ["Analysis time", `${(result.elapsed_ms / 1000).toFixed(2)} s`],
    ...metadataFacts(result.metadata),
  ]);
}
