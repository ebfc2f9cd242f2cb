/* Messages, the busy look and the progress bar. */
import { ApiFailure, KEY_STORAGE } from "./api.js";
import { $, revealIfOffScreen } from "./dom.js";
import { capitalise } from "./format.js";

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
export function showMessage(fileName, sentence, kind) {
  const box = $("message");
  delete box.dataset.startup; // (the start's error, which the page takes away once the server answers)
  box.className = "alert" + (kind === "info" ? " info" : "");
  $("message-title").textContent = fileName ? fileName + ":" : "";
  $("message-detail").textContent = sentence ? capitalise(sentence.trim()).replace(/([^.!?])$/, "$1.") : "";
  box.hidden = false;
  revealIfOffScreen(box);
}

// An error in one sentence: the server's own message, else a title for its status.
export function errorSentence(err) {
  if (err instanceof ApiFailure && err.status === 401) {  // in the page's words: the key is pasted above, not sent in a header
    return localStorage.getItem(KEY_STORAGE)
      ? "The server refused the API key this browser keeps: paste the right one in the box above"
      : "This server needs an API key: paste it in the box above";
  }
  if (err instanceof ApiFailure) {
    return err.detail || TITLES[err.status] || (err.status ? `Error ${err.status}.` : "Connection problem.");
  }
  return "Something went wrong in this page: " + String(err && err.message ? err.message : err);
}

export function showError(err, fileName) {
  showMessage(fileName, errorSentence(err));
}

export function clearResult() {
  // The call is read out when the status's words change: emptied with the result it spoke of, so that the
  // same file analysed again to the same call (more frames, a closer look) is read out again.
  $("announce").textContent = "";
  $("message").hidden = true;
  $("saved-note").hidden = true;
  $("result").hidden = true;
  $("image-result").hidden = true;
  $("video-result").hidden = true;
}

export function clearOutput() {
  clearResult();
  $("progress").hidden = true;
}

export function setBusy(busy) {
  $("dropzone").classList.toggle("busy", busy);
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

export function showProgress(fileName, fraction, stage) {
  const panel = $("progress");
  const appearing = panel.hidden;
  panel.hidden = false;
  // Written only when they change: the stage is a status that screen readers read out on each write, and
  // a job's progress is polled every 600 ms.
  setText($("progress-file"), fileName);
  const status = $("progress-stage");
  status.dataset.stage = stage || "";
  if (appearing) {
    // A status is read out when its text changes while it is shown: written with the panel that shows it,
    // or unchanged from the last file's ("Uploading and analysing…"), it was not. The latest stage goes in
    // a frame later.
    status.textContent = "";
    requestAnimationFrame(() => setText(status, status.dataset.stage));
  } else {
    setText(status, status.dataset.stage);
  }
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
