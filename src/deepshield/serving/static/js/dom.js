/* Building and filling the page's elements. */

const SVG_NS = "http://www.w3.org/2000/svg";

export const $ = (id) => document.getElementById(id);

// Scrolls to what the user's action just brought up when it is out of sight: on a phone the drop zone
// and the examples fill the screen, and the progress bar, the result or the refusal appeared unseen below.
export function revealIfOffScreen(element) {
  const box = element.getBoundingClientRect();
  if (box.top >= window.innerHeight || box.bottom <= 0) element.scrollIntoView({ behavior: scrollBehavior(), block: "start" });
}

// Focus for what took the place of the control that had it (Cancel goes with the progress panel): the
// keyboard's and the screen reader's place, left on the page's body otherwise. Focus elsewhere stays.
// A control just hidden still has the focus until the browser next tidies it away: it counts as lost.
export function focusIfLost(element) {
  const active = document.activeElement;
  if (!active || active === document.body || !active.getClientRects().length) element.focus();
}

// Smooth scrolling, unless the reader asked for less motion.
export function scrollBehavior() {
  return window.matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth";
}

export function el(tag, attrs, children) {
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

export function svg(tag, attrs, children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of [].concat(children || [])) {
    if (child) node.append(child);
  }
  return node;
}

export function renderFacts(target, facts) {
  target.replaceChildren(
    ...facts.filter(([, value]) => value !== null && value !== undefined && value !== "").map(([name, value]) => el("div", {}, [el("dt", { text: name }), el("dd", { text: String(value) })]))
  );
}

// A link that saves `saved` as a JSON file (the page's object URL it held before is released).
export function offerJson(link, saved, name) {
  offerFile(link, JSON.stringify(saved, null, 2), "application/json", name);
}

// A link that saves `text` as a file of `type` (the object URL it held before is released).
export function offerFile(link, text, type, name) {
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  link.hidden = false;
}

// Why a face's or person's score deserves extra care (a small face, a picture read turned): conditions under
// which real faces were measured to be flagged more often. Nothing when there are none.
export function cautionsLine(cautions) {
  if (!cautions || !cautions.length) return null;
  return el("div", { class: "face-meta warning", "data-role": "cautions", text: `Take care: ${cautions.join("; ")}.` });
}
