/* A result saved from this page, opened again as it was saved. */
import { drawBatch, hideBatch, showItem } from "./batch.js";
import { $ } from "./dom.js";
import { utcMinute } from "./format.js";
import { stopWaiting } from "./jobs.js";
import { clearOutput, showMessage } from "./messages.js";
import { markExample } from "./startup.js";
import { state } from "./state.js";

// A ".json" file dropped or chosen is a result saved from this page ("Save this result" or "Save all
// results"): it is shown as it was saved, without analysing anything again.
export const looksLikeSaved = (file) => file.type === "application/json" || /\.json$/i.test(file.name);

const NOT_SAVED = "This JSON file is not a result saved by Deepfake Shield.";
const SCAN_OUTPUT = "This is the output of deepshield scan, which holds no face images to show here: read it as it is "
  + "(or scan with --html for a page). This page opens results saved from it (Save this result, Save all results).";

export async function openSaved(file) {
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
    // `deepshield scan --format json` rows name a path and a status, and carry no face images to show.
    const scanned = entries.length > 0 && entries.every((entry) => entry && typeof entry.path === "string" && typeof entry.status === "string");
    showMessage(file.name, scanned ? SCAN_OUTPUT : NOT_SAVED);
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

export function showSavedNote(fromName) {
  const when = utcMinute(state.analysedAt);
  $("saved-note").textContent = `Opened from ${fromName}: the result as it was saved` + (when ? `, analysed ${when}` : "") + ". Nothing was analysed again.";
  $("saved-note").hidden = false;
}
