/* Deepfake Shield web page: wires the drop zone, the file dialog, paste and the key form, then loads. */
import { KEY_STORAGE } from "./api.js";
import { analyseAll } from "./batch.js";
import { $ } from "./dom.js";
import { analyse, cancelAnalysis } from "./flow.js";
import { showMessage } from "./messages.js";
import { openForPrint, printResult } from "./result.js";
import { looksLikeSaved, openSaved } from "./saved.js";
import { loadExamples, loadServerInfo } from "./startup.js";

function wire() {
  const zone = $("dropzone");
  const input = $("file-input");
  $("choose-button").addEventListener("click", (event) => {
    event.stopPropagation();
    input.click();
  });
  // A click anywhere in the zone opens the dialog too; keyboards and screen readers have the button (the zone
  // is a region, not a button: it holds other controls).
  zone.addEventListener("click", () => input.click());
  $("result-print").addEventListener("click", printResult);
  window.addEventListener("beforeprint", openForPrint);
  $("progress-cancel").addEventListener("click", cancelAnalysis);
  // The frame-count and part choices sit in the drop zone: using them must not open the file dialog.
  for (const choice of ["frames-choice", "span-choice"]) $(choice).addEventListener("click", (event) => event.stopPropagation());
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
    const files = event.dataTransfer ? event.dataTransfer.files : null;
    // A picture dragged from a web page, or text, comes as its address, not a file: it was dropped without a word.
    if (files && !files.length) showMessage(null, "Nothing to analyse was dropped: drop a file (a picture on a web page must be saved first)");
    else take(files);
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
