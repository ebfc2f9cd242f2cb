/* Numbers, times and labels in words, as the page shows them (pure functions). */

// Three-way labels (verdicts, faces, tracks), in words for the small badges.
export const LABEL_WORDS = { likely_manipulated: "LIKELY MANIPULATED", inconclusive: "INCONCLUSIVE", no_signs_found: "NO SIGNS FOUND", no_face: "NO FACE" };

// The synthetic-face score's own call, in words (it uses the same three labels).
const SYNTHETIC_WORDS = {
  likely_manipulated: "likely AI-generated",
  inconclusive: "inconclusive",
  no_signs_found: "no signs of AI generation",
};

export const NO_SYNTHETIC = "Synthetic-face score: not available in this model";

// The heatmap is the face-swap score's map: under a call the synthetic-face score made, "red = looks
// manipulated" read as where the face was AI-generated. Its colours are one scale for every face (README,
// "The probability"): green, read as "low" beside the boxes' colours, lies near even odds.
export const heatmapCaption = (driver) =>
  driver === "synthetic" ? "Face-swap heatmap (the AI-generated score has no map)"
    : "Heatmap, one scale for every face: blue 0%, green ≈50% (even odds, not low), yellow ≈65%, red 100% (looks manipulated)";

// A face's, track's or file's second score and which of the two set its label (see README "Verdicts"),
// to the places that keep it on its side of its own band's edges (`result`: the result it belongs to).
export function syntheticText(probability, label, driver, result) {
  if (probability === null || probability === undefined) return NO_SYNTHETIC;
  const call = label ? ` (${SYNTHETIC_WORDS[label]})` : "";
  const drives = driver === "synthetic" ? "synthetic-face score" : "face-swap score";
  return `Synthetic-face score ${scorePct(probability, syntheticTerms(result), 1)}${call} · the ${drives} drives the verdict`;
}

export const pct = (p, digits = 0) => (p === null || p === undefined ? "—" : (p * 100).toFixed(digits) + "%");

// A probability for display, never a rounded "0%" or "100%", which no estimate can claim: those read
// "<1%" / ">99%" at whole percents, "<0.1%" / ">99.9%" to a tenth (the Python side's `shown_probability`,
// which the server's verdict reasons use).
export const probabilityText = (p, digits = 1) => {
  if (p === null || p === undefined) return "—";
  const shown = (p * 100).toFixed(digits);
  const step = 10 ** -digits;
  if (shown === (0).toFixed(digits)) return `<${step.toFixed(digits)}%`;
  if (shown === (100).toFixed(digits)) return `>${(100 - step).toFixed(digits)}%`;
  return shown + "%";
};

// A score at whole percents (or `fewest` places), but to the places (up to four, as the verdict's reason)
// where rounding would carry it across the threshold or an end of the inconclusive band of `terms` (a
// result): 49.7% shown as "50%" would read as inside a band that starts at 50.0%, beside a label that says
// it is not (and 49.996% as "50.0%", to a tenth).
export const scorePct = (p, terms, fewest = 0) => {
  const band = terms.inconclusive;
  const edges = [band.low, band.high, terms.threshold];
  let digits = fewest;
  while (digits < 4 && edges.some((edge) => (p >= edge) !== (Number((p * 100).toFixed(digits)) / 100 >= edge))) digits += 1;
  return probabilityText(p, digits);
};

// The score that made a label (a face's, a person's or a file's): the synthetic-face score when it drove
// the call, else the face-swap score, with its own threshold and band, what it measures, and the label
// in words. A face called "likely AI-generated" by its synthetic score would otherwise show a low,
// green face-swap score beside its red label.
// `short`: the text for tight places (a face box, a list row), the synthetic score marked "AI".
export function drivingScore(probability, syntheticProbability, driver, label, result) {
  const words = labelWords(label, driver);
  if (driver === "synthetic" && syntheticProbability !== null && syntheticProbability !== undefined) {
    const terms = syntheticTerms(result);
    const text = scorePct(syntheticProbability, terms);
    return { value: syntheticProbability, terms, colour: scoreColour(syntheticProbability, terms), text, short: `${text} AI`, measures: "AI-generated", words };
  }
  const text = scorePct(probability, result);
  return { value: probability, terms: result, colour: scoreColour(probability, result), text, short: text, measures: "face-swap", words };
}

// Faces or people, the most suspicious first, so that the one behind the verdict leads: those counted
// towards the verdict before those not, then by the severity of their call, then by how far the score that
// made it lies above its threshold. Ties keep their order (reading order, or first seen).
// `scores(item)` gives { label, driver, probability, synthetic, counted }.
const SEVERITY = { likely_manipulated: 2, inconclusive: 1, no_signs_found: 0 };
export function mostSuspiciousFirst(items, scores, result) {
  const key = (item) => {
    const { label, driver, probability, synthetic, counted } = scores(item);
    const margin = driver === "synthetic" && synthetic !== null && synthetic !== undefined ? synthetic - result.synthetic_threshold : probability - result.threshold;
    return [counted === false ? 0 : 1, SEVERITY[label] ?? 0, margin];
  };
  const keyed = items.map((item) => ({ item, key: key(item) }));
  keyed.sort((a, b) => b.key[0] - a.key[0] || b.key[1] - a.key[1] || b.key[2] - a.key[2]);
  return keyed.map(({ item }) => item);
}

// The synthetic-face score's threshold and band, shaped as a result's own (for scorePct and the timeline).
export const syntheticTerms = (result) => ({ threshold: result.synthetic_threshold, inconclusive: result.synthetic_inconclusive });

// A label in words for its badge, saying "AI-generated" when the synthetic-face score made the call.
export const labelWords = (label, driver) =>
  driver === "synthetic" && label === "likely_manipulated" ? "LIKELY AI-GENERATED" : LABEL_WORDS[label];

// A score's colour, placed by its own terms (a result, or syntheticTerms(result)) rather than by the bare
// number: the two scores' inconclusive bands lie far apart (the synthetic one is wide), so a score below its
// band is green (to yellow-green), inside it amber and above it orange to red, whichever score it is. The
// three calls' hues do not meet: one sliding scale made a face just inside its band olive, as green as the
// faces with no signs beside it.
export function scoreColour(p, terms) {
  const { low, high } = terms.inconclusive;
  const clamped = Math.min(1, Math.max(0, p));
  const hue = clamped < low ? 120 - 35 * clamped / Math.max(low, 1e-9)
    : clamped <= high ? 48 - 12 * (clamped - low) / Math.max(high - low, 1e-9)
      : 25 - 25 * (clamped - high) / Math.max(1 - high, 1e-9);
  return `hsl(${Math.round(hue)}, 68%, 28%)`;  // 28%: white text on it, and it on white, at 4.5:1 or more
}

export function formatBytes(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(1) + " GB";
  if (n >= 1e6) return (n / 1e6).toFixed(n >= 1e8 ? 0 : 1) + " MB";
  if (n >= 1e3) return (n / 1e3).toFixed(0) + " KB";
  return n + " bytes";
}

// A time in a video, as precise as the stretch shown (`span` seconds) needs: "3.5 s", "1:05", "1:02:03";
// and as `step` (seconds between the times shown together, e.g. sampled frames) needs for no two to read alike.
export function formatTime(seconds, span, step = Infinity) {
  const digits = Math.max(span < 5 ? 1 : 0, step < 0.1 ? 2 : step < 1 ? 1 : 0);
  if (span < 60 && seconds < 60) return `${seconds.toFixed(digits)} s`;
  const rounded = Number(seconds.toFixed(digits));
  const h = Math.floor(rounded / 3600);
  const m = Math.floor((rounded - h * 3600) / 60);
  const s = (rounded - h * 3600 - m * 60).toFixed(digits).padStart(digits ? digits + 3 : 2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

// A time typed for a video, as deepshield.media.units.parse_clock_time reads it: seconds, m:ss or
// h:mm:ss; null when blank. Throws an Error whose message says what is accepted.
export function parseVideoTime(text) {
  const trimmed = text.trim();
  if (!trimmed) return null;
  const found = /^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?|\.\d+)$/.exec(trimmed);
  if (!found) throw new Error(`'${text}' is not a time: write seconds (95), m:ss (1:35) or h:mm:ss (0:01:35)`);
  const [hours, minutes, seconds] = [found[1], found[2], found[3]].map((part) => (part ? Number(part) : 0));
  if ((found[2] !== undefined && seconds >= 60) || (found[1] !== undefined && minutes >= 60)) {
    throw new Error(`'${text}' is not a time: minutes and seconds after a colon are below 60`);
  }
  return hours * 3600 + minutes * 60 + seconds;
}

export const capitalise = (text) => (text ? text.charAt(0).toUpperCase() + text.slice(1) : "");

// "2026-12-05 19:30 UTC" from an ISO time; null: not known (a result saved before times were kept).
export const utcMinute = (iso) => (iso ? iso.slice(0, 16).replace("T", " ") + " UTC" : null);

// "2 counted (4 seen)": how many people take part in the verdict, and how many were tracked, as scan's
// --html page says it ("2 people counted (4 seen)").
export function countedTracks(tracks) {
  const counted = tracks.filter((track) => track.counted).length;
  return counted === tracks.length ? `${tracks.length}` : `${counted} counted (${tracks.length} seen)`;
}

// An AUC and its interval to 2 places, or to 3 where 2 would read a perfect 1.00, as
// deepshield.evaluation.shown.auc_text: 0.9981 [0.9956, 0.9997] read "1.00 [1.00, 1.00]".
export function aucText(value, low, high) {
  const shown = [value, low, high].filter((figure) => figure !== null && figure !== undefined);
  const digits = shown.some((figure) => figure < 1 && figure.toFixed(2) === "1.00") ? 3 : 2;
  const text = (figure) => {
    const fixed = figure.toFixed(digits);
    const step = 10 ** -digits;
    if (figure < 1 && fixed === (1).toFixed(digits)) return ">" + (1 - step).toFixed(digits);
    if (figure > 0 && fixed === (0).toFixed(digits)) return "<" + step.toFixed(digits);
    return fixed;
  };
  return low === null || low === undefined || high === null || high === undefined
    ? text(value) : `${text(value)} [${text(low)}, ${text(high)}]`;
}
