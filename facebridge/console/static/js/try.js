// Try it: two photos and two models. POST /embed (boxes, landmarks, aligned crops) for each photo, then
// POST /verify with both photos; the answer is shown verbatim, and its score placed on the DET curve
// of the map (or the space) that judged it.

import { api, ApiError } from "./api.js";
import { detAt, detChart } from "./charts.js";
import { el, fileBase64, fill, kv, notice, num, sci, start, status } from "./ui.js";

const NS = "http://www.w3.org/2000/svg";
const SIDES = ["a", "b"];
const chosen = { a: null, b: null };
const urls = { a: null, b: null };

function svg(tag, attrs) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function choose(side, file) {
  chosen[side] = file || null;
  document.getElementById(`file-${side}`).textContent = file ? `${file.name} (${Math.round(file.size / 1024)} kB)` : "No photo chosen.";
}

function wireDrop(side) {
  const zone = document.getElementById(`drop-${side}`);
  const input = document.getElementById(`photo-${side}`);
  input.addEventListener("change", () => choose(side, input.files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) {
      input.files = event.dataTransfer.files;
      choose(side, file);
    }
  });
}

function photoFigure(side, model, result, file) {
  if (urls[side]) URL.revokeObjectURL(urls[side]);
  urls[side] = URL.createObjectURL(file);
  const face = result.faces[0];
  const picture = svg("svg", {
    viewBox: `0 0 ${result.width} ${result.height}`,
    role: "img",
    "aria-label": `Photo ${side.toUpperCase()} with the detected face box and five landmarks`,
  });
  picture.append(svg("image", { href: urls[side], x: 0, y: 0, width: result.width, height: result.height }));
  if (face && face.box) {
    const [x1, y1, x2, y2] = face.box;
    for (const cls of ["box-outline", "box"]) {
      picture.append(svg("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, class: cls, "vector-effect": "non-scaling-stroke" }));
    }
    const radius = Math.max(2, Math.min(result.width, result.height) / 90);
    for (const [x, y] of face.landmarks) {
      picture.append(svg("circle", { cx: x, cy: y, r: radius, class: "landmark", "vector-effect": "non-scaling-stroke" }));
    }
  }
  const crops = (face && face.crops) || [];
  return el(
    "figure",
    { class: "photo" },
    el("h3", {}, `Photo ${side.toUpperCase()}: ${model}`),
    picture,
    el("figcaption", {}, face
      ? `${result.width}×${result.height} px; face box ${face.box.map((v) => Math.round(v)).join(", ")}; detection score ${num(face.detection_score, 3)}; ${result.faces.length} face(s) answered (largest only)`
      : "no face"),
    el(
      "div",
      { class: "crops" },
      crops.map((crop) =>
        el("figure", {},
          el("img", { src: `data:image/png;base64,${crop.png}`, alt: `Aligned ${crop.size}×${crop.size} crop of photo ${side.toUpperCase()} fed to ${crop.model}`, width: 112, height: 112 }),
          el("figcaption", {}, `aligned for ${crop.model} (${crop.alignment || "template"}, ${crop.size} px)`)),
      ),
    ),
  );
}

function planView(result, models) {
  const translated = result.translated
    ? `photo ${result.translated.toUpperCase()} (${models[result.translated]}) was translated into ${result.space}'s space`
    : "nothing: both templates are in the same space";
  return kv([
    ["comparison", result.comparison],
    ["space", el("code", {}, result.space)],
    ["maps", result.maps.length ? result.maps.map((m) => el("code", {}, m)).reduce((acc, n) => (acc.length ? [...acc, " then ", n] : [n]), []) : "none"],
    ["translated", translated],
    ["calibration", `${result.calibration.source}, ${result.calibration.units}: ${result.calibration.note}`],
    ["calibrated for this pair", result.calibrated ? "yes" : "no (a chain borrows its last hop's calibration)"],
    ["normalisation", result.normalization ? `AS-norm, top ${result.normalization.top_k}, cohorts ${result.normalization.cohorts.map((c) => c.id).join(", ")}` : "none (raw cosine)"],
  ]);
}

function verdictView(result) {
  return el(
    "div",
    {},
    el("p", { class: `verdict ${result.match ? "match" : "nomatch"}` }, result.match ? "Match" : "No match"),
    kv([
      ["score", `${num(result.score, 4)} (${result.calibration.units}) against threshold ${num(result.threshold, 4)}`],
      ["raw cosine", num(result.raw_score, 4)],
      ["operating point", result.operating_point],
      ["FAR at the threshold", result.far_at_threshold === null ? "–" : `${sci(result.far_at_threshold)} (95% ${result.far_interval ? `${sci(result.far_interval[0])} – ${sci(result.far_interval[1])}` : "–"})`],
      ["TAR at the threshold", result.tar_at_threshold === null ? "–" : num(result.tar_at_threshold, 4)],
    ]),
  );
}

async function evaluationFor(result) {
  if (result.comparison === "both-maps") {
    return { note: `Compared in both spaces through ${result.maps.join(" and ")}: no single map's curve to show.` };
  }
  if (result.comparison === "cross") {
    if (result.maps.length !== 1) return { note: "A chain of maps judged this pair: no single map's curve to show." };
    const [s, t] = result.maps[0].split("->");
    return { evaluation: await api(`/mappings/${encodeURIComponent(s)}/${encodeURIComponent(t)}/evaluation`), kind: "cross" };
  }
  const mappings = await api("/mappings");
  const into = mappings.maps.find((m) => m.id.endsWith(`->${result.space}`));
  if (!into) return { note: `No map into ${result.space}: no native curve on file.` };
  const [s, t] = into.id.split("->");
  return { evaluation: await api(`/mappings/${encodeURIComponent(s)}/${encodeURIComponent(t)}/evaluation`), kind: "native" };
}

async function detView(result) {
  let found;
  try {
    found = await evaluationFor(result);
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 404) return notice(`No evaluation to draw on: ${failure.detail}`, "warn");
    throw failure;
  }
  if (!found.evaluation) return notice(found.note, "warn");
  const population = found.evaluation.populations[0];
  const set = population[found.kind];
  const score = detAt(set.det, result.raw_score);
  const beyond = score.fmr === 0 ? " (above every impostor pair measured)" : score.fnmr === 0 ? " (below every genuine pair measured)" : "";
  const marks = [{ ...score, label: `this pair: raw cosine ${num(result.raw_score, 3)}${beyond}`, cls: "score" }];
  let caption = `The ${found.kind} DET curve of ${found.kind === "cross" ? result.maps[0] : result.space} on ${population.name}; the pair's raw cosine sits where the curve's threshold equals it.`;
  if (result.calibration.units === "cosine") {
    const at = detAt(set.det, result.threshold);
    marks.push({ ...at, label: `threshold ${result.operating_point} (${num(result.threshold, 3)})`, interval: result.far_interval, cls: "" });
  } else {
    caption += " The decision was made in AS-norm units (cohort-normalised), so its threshold is not on this raw-cosine curve.";
  }
  return el(
    "figure",
    {},
    detChart({
      title: `Where this pair's score falls on the ${found.kind} DET curve`,
      description: caption,
      series: [{ label: `${found.kind} (${population.name})`, cls: found.kind, points: set.det }],
      marks,
    }),
    el("figcaption", {}, caption),
  );
}

async function compare(event) {
  event.preventDefault();
  const button = document.getElementById("compare");
  const models = { a: document.getElementById("model-a").value, b: document.getElementById("model-b").value };
  const operatingPoint = document.getElementById("operating-point").value;
  if (!chosen.a || !chosen.b) {
    status("Choose two photos first.", true);
    return;
  }
  button.disabled = true;
  status("Embedding both photos…");
  try {
    const images = { a: await fileBase64(chosen.a), b: await fileBase64(chosen.b) };
    const embedded = {};
    for (const side of SIDES) {
      embedded[side] = await api("/embed", {
        method: "POST",
        body: { images: [{ data: images[side] }], models: [models[side]], largest_only: true, crops: true },
      });
    }
    status("Verifying…");
    const answer = await api("/verify", {
      method: "POST",
      body: { pair: { a: { model: models.a, image: images.a }, b: { model: models.b, image: images.b } }, operating_point: operatingPoint },
    });
    const result = answer.results[0];
    document.getElementById("results").hidden = false;
    fill("verdict", verdictView(result));
    fill("detections", ...SIDES.map((side) => photoFigure(side, models[side], embedded[side].results[0], chosen[side])));
    fill("plan", planView(result, models));
    document.getElementById("answer").textContent = JSON.stringify(answer, null, 2);
    fill("det", await detView(result));
    status(`Done: ${result.match ? "match" : "no match"}.`);
  } catch (failure) {
    if (failure instanceof ApiError && failure.status !== 401) {
      status(`The service answered ${failure.status}: ${failure.detail}`, true);
    } else if (!(failure instanceof ApiError)) {
      status(`Failed: ${failure.message}`, true);
    }
  } finally {
    button.disabled = false;
  }
}

start(async () => {
  const answer = await api("/models");
  const recognizers = answer.models.filter((m) => m.kind === "recognizer" && m.state === "loaded").map((m) => m.id);
  if (!recognizers.length) {
    status("No recognizer is loaded: nothing to try.", true);
    return;
  }
  const defaults = { a: recognizers.includes("arcface-mbf128") ? "arcface-mbf128" : recognizers[0], b: recognizers.includes("sirius-mbf192") ? "sirius-mbf192" : recognizers[recognizers.length - 1] };
  for (const side of SIDES) {
    fill(`model-${side}`, recognizers.map((id) => el("option", { value: id, selected: id === defaults[side] }, id)));
    wireDrop(side);
  }
  document.getElementById("try-form").addEventListener("submit", compare);
});
