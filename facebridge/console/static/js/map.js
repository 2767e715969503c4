// One map: provenance and held-out quality (GET /mappings), quality per population, DET curves and
// score histograms native vs cross (GET /mappings/{source}/{target}/evaluation), thresholds with
// their FAR intervals.

import { api, ApiError } from "./api.js";
import { detAt, detChart, histogramChart } from "./charts.js";
import { badge, el, fill, kv, notice, num, pct, sci, short, start, table } from "./ui.js";

const POINTS = ["far_1e-2", "far_1e-3", "far_1e-4"];
const main = document.getElementById("main");
const source = main.dataset.source;
const target = main.dataset.target;
const mapId = `${source}->${target}`;

function summary(map) {
  const meta = map.metadata;
  const p = meta.provenance;
  fill(
    "summary",
    kv([
      ["method", meta.hidden ? `${meta.method} (residual MLP, hidden ${meta.hidden})` : meta.method],
      ["file", el("code", {}, map.file)],
      ["tensors", short(meta.tensor_sha256)],
      ["source", el("span", {}, el("code", {}, meta.source.model), ` (${meta.source.dim} values, weights `, short(meta.source.sha256), ")")],
      ["target", el("span", {}, el("code", {}, meta.target.model), ` (${meta.target.dim} values, weights `, short(meta.target.sha256), ")")],
      ["fitted on", `${p.dataset}: ${p.images} photos of ${p.identities} people; ${p.pairing}`],
      ["held out", `${p.heldout_images} photos of ${p.heldout_identities} people`],
      ["held-out quality", `mean cosine ${num(meta.quality.mean_cosine, 3)}, cross accuracy ${pct(meta.quality.accuracy_cross)}, target native ${pct(meta.quality.accuracy_target_native)}`],
      ["created", meta.created],
    ]),
  );
}

function qualityTable(evaluation) {
  const rows = evaluation.populations.map((p) => [
    p.name,
    p.in_fit ? badge("in the fit", "warn") : badge("never seen", "ok"),
    p.images,
    p.identities,
    num(p.mean_cosine, 3),
    pct(p.native.eer),
    pct(p.cross.eer),
    pct(p.native.tar_at_far["far_1e-3"]),
    pct(p.cross.tar_at_far["far_1e-3"]),
    pct(p.cross.tar_at_far["far_1e-4"]),
  ]);
  return table(
    [
      { label: "population" }, { label: "seen by the fit" }, { label: "photos", num: true }, { label: "people", num: true },
      { label: "mean cosine", num: true }, { label: "native EER", num: true }, { label: "cross EER", num: true },
      { label: "native TAR@FAR 1e-3", num: true }, { label: "cross TAR@FAR 1e-3", num: true }, { label: "cross TAR@FAR 1e-4", num: true },
    ],
    rows,
    `${evaluation.method}. Evaluated ${evaluation.created}.`,
  );
}

function marks(points, calibration, kind) {
  if (!calibration) return [];
  return POINTS.filter((name) => calibration.thresholds[name]).map((name) => {
    const t = calibration.thresholds[name];
    const at = detAt(points, t.threshold);
    return {
      fmr: at.fmr,
      fnmr: at.fnmr,
      interval: t.far_interval ? [Math.max(t.far_interval[0], 1e-9), t.far_interval[1]] : null,
      range: t.far_range || null,
      label: `${name.replace("far_", "")} (${num(t.threshold, 3)})`,
      cls: kind,
    };
  });
}

function curves(evaluation, population, crossCalibration, nativeCalibration) {
  const p = evaluation.populations.find((one) => one.name === population);
  const det = detChart({
    title: `DET curve of ${mapId} on ${p.name}`,
    description: `False non-match rate against false match rate, log axes, native ${target} and cross (translated ${source} against native ${target}); the map's thresholds marked with their FAR intervals.`,
    series: [
      { label: `native ${target}`, cls: "native", points: p.native.det },
      { label: `cross ${source} → ${target}`, cls: "cross", points: p.cross.det },
    ],
    marks: marks(p.cross.det, crossCalibration, "cross").concat(marks(p.native.det, nativeCalibration, "native")),
  });
  fill(
    "det",
    el("figure", {}, det, el("figcaption", {}, `${p.name}: ${p.native.genuine_pairs} genuine and ${p.native.impostor_pairs} impostor pairs (cross: both orders). Dots: the calibrated thresholds at FAR 1e-2/1e-3/1e-4 (orange, above the curves: the map's cross thresholds; blue, below: the target space's own) where this population's curve puts them; solid bars: their 95% FAR interval on the calibration data; dotted: the FAR range expected on other populations.`)),
  );
  const histograms = [
    ["native", `native ${target}`, p.native, nativeCalibration],
    ["cross", `cross ${source} → ${target}`, p.cross, crossCalibration],
  ].map(([kind, label, set, calibration]) =>
    el(
      "figure",
      {},
      histogramChart({
        title: `Score distributions, ${label}, ${p.name}`,
        description: `Histogram densities of genuine and impostor cosine scores, ${label}, with thresholds as vertical lines.`,
        bins: evaluation.bins,
        series: [
          { label: `genuine (${set.genuine_pairs})`, cls: "genuine", counts: set.genuine },
          { label: `impostor (${set.impostor_pairs})`, cls: "impostor", counts: set.impostor },
        ],
        markers: calibration
          ? POINTS.filter((n) => calibration.thresholds[n]).map((n) => ({ x: calibration.thresholds[n].threshold, label: n.replace("far_", "") }))
          : [],
      }),
      el("figcaption", {}, `${label}: EER ${pct(set.eer)}, TAR at FAR 1e-3 ${pct(set.tar_at_far["far_1e-3"])}.`),
    ),
  );
  fill("hist", ...histograms);
}

function thresholdRows(kind, calibration) {
  if (!calibration) return [];
  return Object.entries(calibration.thresholds).map(([name, t]) => [
    kind,
    name,
    num(t.threshold, 4),
    sci(t.far),
    t.far_interval ? `${sci(t.far_interval[0])} – ${sci(t.far_interval[1])}` : "–",
    t.far_range ? `${sci(t.far_range[0])} – ${sci(t.far_range[1])}` : "–",
    pct(t.tar),
    `${calibration.dataset || "?"}: ${calibration.genuine_pairs} genuine / ${calibration.impostor_pairs} impostor pairs`,
  ]);
}

start(async () => {
  const mappings = await api("/mappings");
  const map = mappings.maps.find((m) => m.id === mapId);
  if (!map) {
    fill("summary", notice(`No map ${mapId} is loaded. The loaded maps are listed on the overview.`, "warn"));
    return;
  }
  summary(map);
  const crossCalibration = map.metadata.calibration ? map.metadata.calibration.cross : null;
  const space = mappings.space_calibrations.find((c) => c.space.model === target);
  const nativeCalibration = space ? space.calibration : null;
  fill(
    "thresholds",
    table(
      [{ label: "comparison" }, { label: "operating point" }, { label: "threshold", num: true }, { label: "FAR", num: true }, { label: "FAR 95% interval" }, { label: "FAR range elsewhere" }, { label: "TAR", num: true }, { label: "calibrated on" }],
      thresholdRows("cross", crossCalibration).concat(thresholdRows(`native ${target}`, nativeCalibration)),
    ),
  );
  let evaluation;
  try {
    evaluation = await api(`/mappings/${encodeURIComponent(source)}/${encodeURIComponent(target)}/evaluation`);
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 404) {
      const text = `No evaluation for this map: ${failure.detail}`;
      fill("quality", notice(text, "warn"));
      fill("det", notice("No curves to draw without an evaluation file.", "warn"));
      return;
    }
    throw failure;
  }
  fill(
    "quality",
    evaluation.current === false ? notice("The loaded map was refitted after this evaluation: these numbers describe the earlier map.", "warn") : null,
    qualityTable(evaluation),
  );
  // first drawn: the first population the map never saw (its curves are the honest ones)
  const unseen = evaluation.populations.find((p) => !p.in_fit);
  const first = (unseen || evaluation.populations[0]).name;
  const select = el(
    "select",
    { id: "population" },
    evaluation.populations.map((p) =>
      el("option", { value: p.name, selected: p.name === first }, p.in_fit ? `${p.name} (in the fit)` : `${p.name} (never seen)`),
    ),
  );
  select.addEventListener("change", () => curves(evaluation, select.value, crossCalibration, nativeCalibration));
  fill("controls", el("label", { for: "population" }, "Population"), select);
  curves(evaluation, first, crossCalibration, nativeCalibration);
});
