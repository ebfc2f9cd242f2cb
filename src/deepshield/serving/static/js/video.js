/* A video's result: the timeline per person and a card per face track. */
import { $, cautionsLine, el, renderFacts, svg } from "./dom.js";
import { analyse } from "./flow.js";
import { countedTracks, drivingScore, formatTime, heatmapCaption, mostSuspiciousFirst, pct, probabilityText, scoreColour, scorePct, syntheticTerms, syntheticText } from "./format.js";
import { offerDownload, offerPrint, renderFileFacts, renderVerdict } from "./result.js";

const TRACK_COLOURS = ["#2563eb", "#d97706", "#7c3aed", "#0d9488", "#db2777", "#4b5563", "#65a30d", "#0891b2"];

// Steps whose ticks read exactly at the tenth of a second the axis shows under a minute (0.25 s ticks
// read 0.3, 0.8, 1.3 s).
function niceStep(span, maxTicks) {
  const steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900];
  return steps.find((step) => span / step <= maxTicks) || steps[steps.length - 1];
}

// As the video plays: a phone's portrait video is stored sideways with a rotation to apply, anamorphic
// video in pixels wider (or higher) than square, which the analysis applies too. Frames above the pixel
// limit (8K video), or many frames of a large video, are read at a fraction of their size (the verdict's
// reason says why); results saved before decoded_scale or pixel_aspect existed were read whole and square.
function resolution(v) {
  const turned = v.rotation === 90 || v.rotation === 270;
  const aspect = v.pixel_aspect || 1;
  const [w, h] = aspect > 1 ? [Math.round(v.width * aspect), v.height] : aspect < 1 ? [v.width, Math.round(v.height / aspect)] : [v.width, v.height];
  const stored = [];
  if (turned || aspect !== 1) stored.push(`stored ${v.width} × ${v.height}`);
  if (aspect !== 1) stored.push(`anamorphic pixels ${Number(aspect.toFixed(2))}:1`);
  if (turned) stored.push(`turned ${v.rotation}°`);
  const size = (turned ? `${h} × ${w}` : `${w} × ${h}`) + (stored.length ? ` (${stored.join(", ")})` : "");
  const scale = v.decoded_scale || 1;
  return scale > 1 ? `${size}, read at 1/${scale} of its width and height` : size;
}

export function renderVideo(result, file, fileName, source) {
  $("result").hidden = false;
  $("video-result").hidden = false;
  renderVerdict(result, fileName);
  renderFileFacts(result, file, fileName);
  offerDownload(result, file, fileName);
  offerPrint(result, fileName);
  const v = result.video;
  const part = result.analysed;
  // In the words of the verdict's reason (the server's); results saved before it said them, in the page's.
  const partText = part.part || `${formatTime(part.start_s, v.duration_s)} to ${part.end_s === null ? "the end" : formatTime(part.end_s, v.duration_s)}`;
  const partFacts = part.whole ? [] : [["Part analysed", partText]];
  renderFacts($("video-facts"), [
    ["Duration", `${v.duration_s.toFixed(1)} s`],
    ...partFacts,
    ["Resolution", resolution(v)],
    ["Frame rate", `${v.fps.toFixed(2)} fps`],
    ["Codec", v.codec],
    ["Audio", v.has_audio ? "present, not analysed (faces only)" : null],
    ["Frames analysed", `${result.sampled_frames}`],
    // Stray one- or two-frame detections are tracked but do not count towards the verdict: said so.
    ["People", countedTracks(result.tracks)],
  ]);
  $("video-rule").textContent = "How the verdict is made: " + result.rule + ".";
  offerMoreFrames(result, source);
  offerTimelineScores(result, source);
}

// A model with the synthetic-face score can plot either score over time; the one that made the file's
// call is plotted first, so the chart agrees with the verdict above it.
function offerTimelineScores(result, source) {
  const switcher = $("timeline-score");
  const both = result.synthetic_threshold !== null && result.synthetic_threshold !== undefined;
  switcher.hidden = !both;
  const plot = (which) => {
    for (const button of switcher.querySelectorAll("button")) button.setAttribute("aria-pressed", String(button.dataset.score === which));
    drawTimeline(result, source, which);
  };
  for (const button of switcher.querySelectorAll("button")) button.onclick = () => plot(button.dataset.score);
  plot(both && result.verdict.verdict_driver === "synthetic" ? "synthetic" : "manipulation");
}

// An inconclusive video may be settled by more frames: a swap can show in frames the first pass did
// not sample. Offered where the drop zone allows more than were sampled and the part analysed has them.
function offerMoreFrames(result, source) {
  const box = $("more-frames");
  box.hidden = true;
  const part = result.analysed;
  // From the picture's start: times count from the file's start, and where its sound starts first the part's
  // seconds before the picture hold no frame (a clip of 20 frames after 6 s of sound was offered 64; its part
  // 0:00 to 0:07, 10 frames, all sampled, still was with the cap at the video's frames alone).
  const from = Math.max(part.start_s, result.video.picture_start_s || 0);
  const length = (part.end_s !== null ? part.end_s : result.video.duration_s) - from;
  const frames = Math.min(length * result.video.fps, result.video.frame_count > 0 ? result.video.frame_count : Infinity);
  const select = $("frames-select");
  const next = [...select.options].map((option) => Number(option.value)).find((n) => n > result.sampled_frames);
  if (!source || result.verdict.label !== "inconclusive" || !next || frames <= result.sampled_frames) return;
  const button = el("button", { type: "button", class: "result-print", text: `Analyse again with ${next} frames` });
  button.addEventListener("click", () => {
    select.value = String(next); // shown in the drop zone: the next video gets as many
    analyse(source.file, source.exampleFile, part.whole ? { start: null, end: null } : { start: part.start_s, end: part.end_s }, true);
  });
  box.replaceChildren(
    document.createTextNode(`Inconclusive on ${result.sampled_frames} frames: more may settle it. `),
    button,
  );
  box.hidden = false;
}

const trackColour = (i) => TRACK_COLOURS[i % TRACK_COLOURS.length];
// Each person's line also has its own dash pattern, which its card's swatch repeats: lines told apart by
// colour alone were one line to a colour-blind reader (WCAG 1.4.1). Dotted is kept for uncounted tracks.
const TRACK_DASHES = ["", "10 4", "10 3 2 3", "18 5", "4 4 12 4"];
const trackDash = (i) => TRACK_DASHES[i % TRACK_DASHES.length];

// `which`: the score plotted, "manipulation" (the face-swap score) or "synthetic", with its own threshold and band.
function drawTimeline(result, source, which) {
  const synthetic = which === "synthetic";
  const score = (p) => (synthetic ? p.synthetic_probability : p.probability);
  const terms = synthetic ? syntheticTerms(result) : result;
  // The scores' own names, as every other text names them ("Probability of manipulation" was a third name).
  const what = synthetic ? "Synthetic-face score" : "Face-swap score";
  $("timeline-title").textContent = `${what} over time, per person`;
  // Drawn at the chart's own width (up to 860 units), not scaled down from 860: on a phone its words keep
  // their size and its points stay large enough to tap.
  const W = Math.round(Math.min(860, Math.max(300, $("timeline").clientWidth || 860)));
  const narrow = W < 600;
  const H = narrow ? 240 : 300, L = 48, R = 84, T = 16, B = 36;
  const times = result.timeline.map((p) => p.timestamp_s);
  // The axis covers what was analysed: the whole video, or the part asked for.
  const part = result.analysed;
  const from = part.start_s;
  const to = part.end_s !== null && !part.whole ? part.end_s : Math.max(result.video.duration_s || 0, times.length ? Math.max(...times) : 0);
  const span = Math.max(to - from, 0.1);
  const x = (t) => L + (W - L - R) * ((t - from) / span);
  // A sampled frame's time, with the digits that tell neighbouring frames apart (32 frames of 10 s are 0.3 s apart).
  const gaps = times.slice(1).map((t, k) => t - times[k]).filter((gap) => gap > 0);
  const frameTime = (t) => formatTime(t, span, gaps.length ? Math.min(...gaps) : Infinity);
  const y = (p) => T + (H - T - B) * (1 - p);
  // A group, not an image: its points are read out. One Tab stop per person; arrow keys walk its points.
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "group", "data-score": which, "aria-label": `${what} over time for each person: Tab to a person's line, arrow keys along it` });

  // The inconclusive band behind everything: scores in it the model cannot call either way.
  const band = terms.inconclusive;
  root.append(svg("rect", { class: "band", x: L, width: W - L - R, y: y(band.high), height: Math.max(0, y(band.low) - y(band.high)) }));
  // Its label (11 px) sits in whichever part of the band beside the threshold line has room, else just above
  // the band: a narrow band (the shipped one is 7 points) put it across the line.
  const room = 17; // 11 px text and its halo
  const labelY = y(terms.threshold) - y(band.high) >= room ? y(band.high) + 11 : y(band.low) - y(terms.threshold) >= room ? y(band.low) - 3 : y(band.high) - 4;
  // Drawn last, over the points, with a white halo: on a phone the first points lay over it ("inco●c●usive").
  const bandLabel = svg("text", { class: "band-label", x: L + 6, y: labelY, text: "inconclusive" });
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(p), y2: y(p) }));
    root.append(svg("text", { class: "tick", x: L - 8, y: y(p) + 4, "text-anchor": "end", text: pct(p) }));
  }
  const step = niceStep(span, narrow ? 4 : 8);
  for (let t = Math.ceil(from / step - 1e-9) * step; t <= from + span + 1e-9; t += step) {
    root.append(svg("line", { class: "axis", x1: x(t), x2: x(t), y1: H - B, y2: H - B + 5 }));
    root.append(svg("text", { class: "tick", x: x(t), y: H - B + 18, "text-anchor": "middle", text: formatTime(t, span) }));
  }
  root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  root.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));

  // Sampled frames without any face: small grey marks on the time axis.
  for (const point of result.timeline) {
    if (point.faces === 0) {
      root.append(svg("rect", { class: "no-face-mark", x: x(point.timestamp_s) - 2, y: H - B - 6, width: 4, height: 6 }, [svg("title", { text: `${frameTime(point.timestamp_s)}: no face in this frame` })]));
    }
  }

  const threshold = terms.threshold;
  root.append(svg("line", { class: "threshold", x1: L, x2: W - R, y1: y(threshold), y2: y(threshold) }));
  root.append(svg("text", { class: "threshold-label", x: W - R + 6, y: y(threshold) - 2, text: "threshold" }));
  root.append(svg("text", { class: "threshold-label", x: W - R + 6, y: y(threshold) + 11, text: pct(threshold, threshold * 100 % 1 ? 1 : 0) }));

  const tip = $("timeline-tip");
  tip.hidden = true;
  result.tracks.forEach((track, i) => {
    const colour = trackColour(i);
    const name = `Person ${i + 1}`;
    const points = track.points.map((p) => `${x(p.timestamp_s).toFixed(1)},${y(score(p)).toFixed(1)}`).join(" ");
    const group = svg("g", { "data-track": String(track.track_id) });
    if (track.points.length > 1) group.append(svg("polyline", { class: "track" + (track.counted ? "" : " uncounted"), points, stroke: colour, "stroke-dasharray": trackDash(i) || null }));
    track.points.forEach((p, k) => {
      const dot = svg("circle", {
        class: "point", cx: x(p.timestamp_s), cy: y(score(p)), r: narrow ? 6 : 4, fill: colour, tabindex: k === 0 ? "0" : "-1", role: "img",
        "aria-label": `${name} at ${frameTime(p.timestamp_s)} (frame ${p.frame_index}): ${probabilityText(score(p))}`,
      });
      const show = () => showTip(tip, dot, p, name, frameTime);
      dot.addEventListener("mouseenter", show);
      dot.addEventListener("focus", show);
      dot.addEventListener("mouseleave", () => (tip.hidden = true));
      dot.addEventListener("blur", () => (tip.hidden = true));
      dot.addEventListener("keydown", (event) => {
        if (event.key === "Escape") {  // the frame's face goes; the focus stays (WCAG 1.4.13)
          tip.hidden = true;
          return;
        }
        const dots = [...group.querySelectorAll("circle.point")];
        const to = { ArrowRight: k + 1, ArrowDown: k + 1, ArrowLeft: k - 1, ArrowUp: k - 1, Home: 0, End: dots.length - 1 }[event.key];
        if (to === undefined || !dots[to]) return;
        event.preventDefault();
        dots[to].focus();
      });
      group.append(dot);
    });
    root.append(group);
  });
  if (!result.tracks.length) {
    root.append(svg("text", { class: "tick", x: (L + W - R) / 2, y: (T + H - B) / 2, "text-anchor": "middle", text: "No face found in any sampled frame" }));
  }
  root.append(bandLabel);
  $("timeline").replaceChildren(root, tip);
  // Each card keeps its track's colour on the timeline (its index there); the cards go most suspicious first.
  const trackScores = ({ track }) => ({ label: track.label, driver: track.verdict_driver, probability: track.score, synthetic: track.synthetic_score, counted: track.counted });
  const indexed = result.tracks.map((track, i) => ({ track, i }));
  $("tracks").replaceChildren(...mostSuspiciousFirst(indexed, trackScores, result).map(({ track, i }) => trackCard(track, i, result, span, frameTime, source)));
}

// Hovering (or focusing) a point shows the face the model scored in that frame.
function showTip(tip, dot, point, name, frameTime) {
  tip.replaceChildren(
    el("img", { src: point.thumbnail_jpeg || "", alt: `${name} in the frame at ${frameTime(point.timestamp_s)}`, width: "96", height: "96" }),
    el("div", {}, [el("strong", { text: name }), document.createTextNode(` · ${frameTime(point.timestamp_s)} · frame ${point.frame_index}`)]),
    el("div", {
      text: `face-swap ${probabilityText(point.probability)}` +
        (point.synthetic_probability !== null && point.synthetic_probability !== undefined ? ` · synthetic ${probabilityText(point.synthetic_probability)}` : ""),
    })
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
function trackCard(track, i, result, span, frameTime, source) {
  const name = `Person ${i + 1}`;
  const swatch = svg("svg", { class: "swatch", viewBox: "0 0 28 10", "aria-hidden": "true" }, [
    svg("line", { x1: 0, y1: 5, x2: 28, y2: 5, stroke: trackColour(i), "stroke-width": 3, "stroke-dasharray": track.counted ? trackDash(i) || null : "2 4" }),
  ]);
  const when = track.first_seen_s === track.last_seen_s ? `at ${frameTime(track.first_seen_s)}` : `${frameTime(track.first_seen_s)} to ${frameTime(track.last_seen_s)}`;
  const seen = `Seen in ${track.frames_seen} of ${result.sampled_frames} frames, ${when}`;
  const driving = drivingScore(track.score, track.synthetic_score, track.verdict_driver, track.label, result);
  const card = el("article", { class: "track-card" + (track.counted ? "" : " uncounted"), "data-track": String(track.track_id), "aria-label": name }, [
    el("div", { class: "track-head" }, [
      swatch,
      el("h3", { class: "track-title", text: name }),
      el("span", { class: "label " + track.label, text: driving.words }),
      el("span", { class: "track-score", "data-role": "track-score", text: driving.short }),
    ]),
    el("div", { class: "face-images" }, [
      el("figure", {}, [el("img", { src: track.thumbnail_png, alt: `${name} in its most suspicious frame` }), el("figcaption", { text: `Most suspicious frame (${frameTime(track.peak_timestamp_s)})` })]),
      el("figure", {}, [el("img", { src: track.heatmap_png, alt: `Heatmap for ${name}` }), el("figcaption", { text: heatmapCaption(track.verdict_driver) })]),
    ]),
    el("div", { class: "face-meta", text: seen }),
    el("div", {
      class: "face-meta", "data-role": "synthetic-score",
      text: syntheticText(track.synthetic_score, track.synthetic_label, track.verdict_driver, result),
    }),
    cautionsLine(track.cautions),
    el("div", { class: "face-meta" + (track.counted ? "" : " warning"), "data-role": "counted", text: track.counted ? "Counts towards the verdict" : `Does not count towards the verdict: ${track.not_counted_reason}` }),
    filmstrip(track, name, frameTime, result),
    source ? closerButton(track, result, span, source) : null,
  ]);
  card.style.borderLeftColor = trackColour(i);
  const line = () => document.querySelector(`#timeline g[data-track="${track.track_id}"]`);
  card.addEventListener("mouseenter", () => line() && line().classList.add("highlight"));
  card.addEventListener("mouseleave", () => line() && line().classList.remove("highlight"));
  return card;
}

// Every frame the person was seen in, side by side with its score (underlined in the score's colour, the
// most suspicious framed): what the timeline's points show one at a time. Folded until opened.
// Each frame by the score behind the person's call, as its most suspicious frame is chosen: a person the
// synthetic-face score called was framed and scored by the face-swap score, its peak another frame.
function filmstrip(track, name, frameTime, result) {
  const frames = track.points.filter((point) => point.thumbnail_jpeg);
  if (!frames.length) return null;
  const synthetic = track.verdict_driver === "synthetic";
  const terms = synthetic ? syntheticTerms(result) : result;
  const value = (point) => (synthetic ? point.synthetic_probability : point.probability);
  return el("details", { class: "filmstrip", "data-role": "filmstrip" }, [
    el("summary", { text: frames.length === 1 ? `The one frame of ${name}` : `All ${frames.length} frames of ${name}` }),
    el("div", { class: "filmstrip-frames" }, frames.map((point) => {
      const at = frameTime(point.timestamp_s);
      const score = el("span", { text: scorePct(value(point), terms) + (synthetic ? " AI" : "") });
      score.style.borderBottomColor = scoreColour(value(point), terms);
      const measures = synthetic ? "synthetic-face score" : "face-swap score";
      return el("figure", { class: point.frame_index === track.peak_frame_index ? "peak" : null, title: `${name} at ${at}, frame ${point.frame_index}: ${measures} ${probabilityText(value(point))}` }, [
        el("img", { src: point.thumbnail_jpeg, alt: `${name} at ${at}`, loading: "lazy" }),
        el("figcaption", {}, [at, el("br"), score]),
      ]);
    })),
  ]);
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
    text: `Look closer: ${formatTime(start, span, 0.1)} to ${formatTime(end, span, 0.1)}`,
    title: "Analyse the seconds around this face's most suspicious frame again, with the frames chosen in the drop zone spread over them",
  });
  button.addEventListener("click", () => analyse(source.file, source.exampleFile, { start, end }, true));
  return el("div", { class: "face-meta" }, [button]);
}
