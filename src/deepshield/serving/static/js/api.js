/* Calls to the server's /v1 API, with the API key this browser keeps. */
import { $ } from "./dom.js";

export const KEY_STORAGE = "deepshield-api-key";

export class ApiFailure extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

export async function api(path, options) {
  const headers = new Headers((options && options.headers) || {});
  const key = localStorage.getItem(KEY_STORAGE);
  if (key) headers.set("X-API-Key", key);
  const aborted = () => options && options.signal && options.signal.aborted;
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (err) {
    if (aborted()) throw new ApiFailure(0, "aborted", "The request was stopped.");
    throw new ApiFailure(0, "network", "Could not reach the server. Check your connection and that the server is running.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (aborted()) {
    // Stopped after the server answered: what it made (a job, named by Location) is the caller's to undo.
    const failure = new ApiFailure(0, "aborted", "The request was stopped.");
    failure.location = response.headers.get("Location");
    throw failure;
  }
  if (!response.ok) {
    const code = (body && body.error) || "http_" + response.status;
    const detail = (body && body.detail) || `The server answered ${response.status} ${response.statusText}.`;
    if (response.status === 401) showKeyPanel();
    const failure = new ApiFailure(response.status, code, detail);
    // Seconds the server asks to be left alone for (its 503 "busy", a 429); an HTTP-date is not read.
    const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
    if (retryAfter >= 0) failure.retryAfter = retryAfter;
    throw failure;
  }
  // Every answer but a DELETE's 204 is JSON: anything else (a proxy's sign-in page) sent a photo again as a
  // job, then ended in "Something went wrong in this page: Cannot read properties of null (reading 'id')".
  if (body === null && response.status !== 204) {
    throw new ApiFailure(response.status, "not_json", "The server's answer was not Deepfake Shield's (a proxy's page, or a sign-in?): reload the page and try again");
  }
  return body;
}

export function showKeyPanel() {
  $("api-key-panel").hidden = false;
}

export function formData(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return form;
}
