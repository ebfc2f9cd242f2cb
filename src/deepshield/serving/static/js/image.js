/* A photo's result: its faces outlined on it, a card per face. */
import { $, cautionsLine, el, scrollBehavior } from "./dom.js";
import { drivingScore, heatmapCaption, mostSuspiciousFirst, pct, probabilityText, scorePct, syntheticText } from "./format.js";
import { offerDownload, offerPrint, renderFileFacts, renderVerdict } from "./result.js";

export function renderImage(result, fileName) {
  $("result").hidden = false;
  $("image-result").hidden = false;
  renderVerdict(result, fileName);
  renderFileFacts(result, result.file, fileName);
  offerDownload(result, result.file, fileName);
  offerPrint(result, fileName);

  const stage = $("photo-stage");
  const img = $("photo");
  stage.querySelectorAll(".face-box").forEach((node) => node.remove());
  img.src = result.preview_jpeg || "";
  for (const face of result.faces) {
    const [x0, y0, x1, y1] = face.box;
    const driving = drivingScore(face.probability, face.synthetic_probability, face.verdict_driver, face.label, result);
    const colour = driving.colour;
    // A button, so that a keyboard reaches each face on the photo as a mouse does: it lights the face
    // and its card up, and takes focus to the card.
    const summary = `Face ${face.index + 1}: ${probabilityText(driving.value)} (${driving.measures} score)`;
    const box = el("button", { type: "button", class: "face-box", "data-face": String(face.index), title: summary, "aria-label": `${summary}: show its card` });
    box.style.left = (100 * x0 / result.width).toFixed(3) + "%";
    box.style.top = (100 * y0 / result.height).toFixed(3) + "%";
    box.style.width = (100 * (x1 - x0) / result.width).toFixed(3) + "%";
    box.style.height = (100 * (y1 - y0) / result.height).toFixed(3) + "%";
    box.style.borderColor = colour;
    // Its score is on its card and in its tooltip: in a crowd the label says its number alone. A face at
    // the top of the photo has its label inside its box, one at the right edge its label leftwards.
    const leftwards = x0 / result.width > 1 - LABEL_SHARE;
    const place = (y0 / result.height < 0.06 ? " inside" : "") + (leftwards ? " end" : "");
    const label = el("span", { class: "face-box-label" + place, text: crowded(face, result.faces, result.width, leftwards) ? `${face.index + 1}` : `${face.index + 1} · ${driving.short}` });
    label.style.background = colour;
    box.append(label);
    for (const [on, off] of [["mouseenter", "mouseleave"], ["focus", "blur"]]) {
      box.addEventListener(on, () => highlight(face.index, true));
      box.addEventListener(off, () => highlight(face.index, false));
    }
    box.addEventListener("click", () => {
      const card = document.querySelector(`.face-card[data-face="${face.index}"]`);
      if (!card) return;
      card.scrollIntoView({ behavior: scrollBehavior(), block: "nearest" });
      card.focus({ preventScroll: true });
    });
    stage.append(box);
  }

  const faces = $("faces");
  if (!result.faces.length) {
    faces.replaceChildren(el("div", { class: "no-face", "data-role": "no-face" }, [
      el("strong", { text: "No face found. " }),
      // Why faces go unfound is the verdict's reason, shown above (it was said twice, in two wordings).
      document.createTextNode("Nothing to score: the verdict above says why faces go unfound."),
    ]));
    return;
  }
  const faceScores = (face) => ({ label: face.label, driver: face.verdict_driver, probability: face.probability, synthetic: face.synthetic_probability });
  faces.replaceChildren(
    ...mostSuspiciousFirst(result.faces, faceScores, result).map((face) => {
      const driving = drivingScore(face.probability, face.synthetic_probability, face.verdict_driver, face.label, result);
      const colour = driving.colour;
      // The meter shows the score in the card's head, with that score's own threshold and band.
      const { threshold, inconclusive: band } = driving.terms;
      const fill = el("div", { class: "meter-fill", "data-role": "meter-fill" });
      fill.style.width = pct(driving.value, 1);
      fill.style.background = colour;
      const tick = el("div", { class: "meter-threshold", title: `threshold ${pct(threshold, 1)}` });
      tick.style.left = pct(threshold, 1);
      const zone = el("div", { class: "meter-band", title: `inconclusive from ${pct(band.low, 1)} to ${pct(band.high, 1)}` });
      zone.style.left = pct(band.low, 1);
      zone.style.width = pct(band.high - band.low, 1);
      const scoreNode = el("div", { class: "face-score", "data-role": "face-score" }, [document.createTextNode(driving.text + " "), el("small", { text: driving.measures })]);
      scoreNode.style.color = colour;
      const card = el("article", { class: "face-card", "data-face": String(face.index), "aria-label": `Face ${face.index + 1}`, tabindex: "-1" }, [
        el("div", { class: "face-head" }, [
          el("div", {}, [el("h3", { class: "face-title", text: `Face ${face.index + 1}` }), el("span", { class: "label " + face.label, text: driving.words })]),
          scoreNode,
        ]),
        el("div", { class: "meter", "data-role": "meter", title: `${driving.text} ${driving.measures} score; inconclusive from ${pct(band.low, 1)} to ${pct(band.high, 1)}, threshold ${pct(threshold, 1)}` }, [zone, fill, tick]),
        el("div", { class: "face-images" }, [
          el("figure", {}, [el("img", { src: face.crop_png, alt: `Face ${face.index + 1} as the model saw it` }), el("figcaption", { text: "Face as analysed" })]),
          el("figure", {}, [el("img", { src: face.heatmap_png, alt: `Heatmap for face ${face.index + 1}` }), el("figcaption", { text: heatmapCaption(face.verdict_driver) })]),
        ]),
        // The detector's score, named for what it measures: "detection confidence" under the face's score read
        // as confidence in the verdict.
        el("div", { class: "face-meta", text: `Face-swap score ${scorePct(face.probability, result, 1)} · inconclusive ${pct(result.inconclusive.low, 1)}–${pct(result.inconclusive.high, 1)} · face-finder certainty that this is a face: ${pct(face.detection_score)}${face.turned_deg ? ` · turned ${face.turned_deg}° to be read upright` : ""}` }),
        el("div", {
          class: "face-meta", "data-role": "synthetic-score",
          text: syntheticText(face.synthetic_probability, face.synthetic_label, face.verdict_driver, result),
        }),
        cautionsLine(face.cautions),
      ]);
      card.style.borderLeftColor = colour;
      card.addEventListener("mouseenter", () => highlight(face.index, true));
      card.addEventListener("mouseleave", () => highlight(face.index, false));
      return card;
    })
  );
}

// A label with a score ("14 · 38% AI") takes up to about a seventh of the photo's width as shown.
const LABEL_SHARE = 0.15;

// Labelled with its number alone, so that labels do not run into each other: a face narrower than a
// twentieth of the photo, or with another face at about the same height whose label starts within where
// this one's would lie (a label's width to its right; to its left, ending at its right edge, for a label
// placed leftwards at the photo's right edge).
export function crowded(face, faces, width, leftwards = false) {
  const [x0, y0, x1, y1] = face.box;
  if ((x1 - x0) / width < 0.05) return true;
  const [from, to] = leftwards ? [x1 - LABEL_SHARE * width, x1] : [x0, x0 + LABEL_SHARE * width];
  return faces.some(({ box }) => box !== face.box && box[0] >= from && box[0] < to && box[0] !== x0 && Math.abs(box[1] - y0) < y1 - y0);
}

function highlight(index, on) {
  document.querySelectorAll(`[data-face="${index}"]`).forEach((node) => node.classList.toggle("highlight", on));
}
