// Overview: readiness, models, maps, calibrations in force, request rates (from /metrics).

import { api } from "./api.js";
import { parsePrometheus, sumBy } from "./prom.js";
import { badge, el, fill, notice, num, pct, section, short, start, table } from "./ui.js";

const STATE_KIND = { loaded: "ok", unavailable: "warn", refused: "bad" };

async function readiness() {
  let answer;
  try {
    answer = await api("/readyz", { auth: false });
  } catch (failure) {
    answer = failure.problem || { status: "unknown" };
  }
  const ready = answer.status === "ready";
  fill(
    "readiness",
    el("p", {}, badge(ready ? "ready" : answer.status, ready ? "ok" : "warn"), " ",
      ready ? `${answer.models_loaded.length} model(s) loaded: ${answer.models_loaded.join(", ")}` : answer.detail || "models still loading"),
  );
}

async function models() {
  const answer = await api("/models");
  fill(
    "models",
    el("p", { class: "hint" }, `Execution providers: ${answer.providers.join(", ")}`),
    table(
      [{ label: "model" }, { label: "kind" }, { label: "state" }, { label: "providers" }, { label: "sha256 (pinned)" }, { label: "sha256 of the file" }, { label: "dim", num: true }],
      answer.models.map((m) => [
        el("code", {}, m.id),
        m.kind,
        el("span", {}, badge(m.state, STATE_KIND[m.state] || "info"), m.reason ? ` ${m.reason}` : ""),
        m.providers.join(", ") || "–",
        short(m.sha256),
        m.file_sha256 ? (m.sha256 && m.file_sha256 !== m.sha256 ? badge("differs", "bad") : short(m.file_sha256)) : "–",
        m.dim,
      ]),
    ),
  );
}

function populationsSeen(provenance) {
  const names = new Set(provenance.dataset.split("+"));
  for (const population of provenance.populations || []) names.add(population.name);
  return [...names].join(", ");
}

async function maps() {
  const answer = await api("/mappings");
  const inForce = new Map(answer.in_force.map((c) => [c.comparison, c]));
  const rows = answer.maps.map((m) => {
    const meta = m.metadata;
    const [source, target] = m.id.split("->");
    const judged = inForce.get(m.id);
    return [
      el("a", { href: `/console/maps/${encodeURIComponent(source)}/${encodeURIComponent(target)}` }, m.id),
      meta.hidden ? `${meta.method} (hidden ${meta.hidden})` : meta.method,
      num(meta.quality.mean_cosine, 3),
      pct(meta.quality.accuracy_cross),
      pct(meta.quality.accuracy_target_native),
      populationsSeen(meta.provenance),
      `${meta.provenance.heldout_identities} people`,
      judged ? `${judged.source}, ${judged.units}` : "–",
    ];
  });
  fill(
    "maps",
    table(
      [{ label: "map" }, { label: "method" }, { label: "mean cosine", num: true }, { label: "cross accuracy", num: true }, { label: "target native accuracy", num: true }, { label: "populations seen" }, { label: "held out" }, { label: "calibration" }],
      rows,
      `${answer.maps.length} map(s) loaded, ${answer.refused.length} refused`,
    ),
    answer.refused.length
      ? table([{ label: "refused file" }, { label: "why" }], answer.refused.map((r) => [el("code", {}, r.file), r.reason]))
      : null,
  );
}

async function calibrations() {
  const report = await api("/calibration");
  const sets = report.calibration_sets.map((set) => [
    el("code", {}, set.file),
    badge(set.kind, set.kind === "deployment" ? "info" : "ok"),
    set.populations.map((p) => p.name).join(", ") || "–",
    set.normalization ? `${set.normalization.method} (top ${set.normalization.top_k})` : "raw cosine",
    set.comparisons,
    set.created,
  ]);
  const cohorts = report.cohorts.map((c) => [c.id, el("code", {}, c.space.model), c.provenance.count, `${c.provenance.kind}: ${c.provenance.source}`]);
  const counts = {};
  for (const c of report.comparisons) {
    const key = `${c.source}, ${c.units}`;
    counts[key] = (counts[key] || 0) + 1;
  }
  fill(
    "calibrations",
    table([{ label: "calibration set" }, { label: "kind" }, { label: "populations" }, { label: "units" }, { label: "comparisons", num: true }, { label: "created" }], sets),
    report.cohorts.length
      ? table([{ label: "cohort" }, { label: "space" }, { label: "templates", num: true }, { label: "from" }], cohorts, "Cohorts of this deployment's people")
      : notice("No cohort configured: thresholds are those of the shipped calibration population (see Population)."),
    el("p", {}, "Comparisons judged by: ", Object.entries(counts).map(([k, n]) => `${n} × ${k}`).join("; ") || "–"),
  );
}

let previous = null;

async function rates() {
  const text = await api("/metrics");
  const samples = parsePrometheus(text);
  const now = performance.now();
  const byRoute = sumBy(samples, "facebridge_requests_total", "route");
  const errors = sumBy(samples, "facebridge_requests_total", "route", (labels) => Number(labels.status) >= 400);
  const interval = previous ? (now - previous.at) / 1000 : null;
  const rows = [...byRoute.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([route, total]) => {
      const rate = interval && previous.byRoute.has(route) ? (total - previous.byRoute.get(route)) / interval : null;
      return [el("code", {}, route), total, errors.get(route) || 0, rate === null ? "measuring…" : rate.toFixed(2)];
    });
  const maps = samples.find((x) => x.name === "facebridge_maps_loaded");
  const loaded = samples.find((x) => x.name === "facebridge_models_loaded");
  fill(
    "rates",
    el("p", {}, `Maps loaded: ${maps ? maps.value : "–"}; models loaded: ${loaded ? loaded.value : "–"}.`),
    table([{ label: "route" }, { label: "requests", num: true }, { label: "answered ≥ 400", num: true }, { label: "per second", num: true }], rows),
  );
  previous = { at: now, byRoute };
}

start(async () => {
  await Promise.all([
    readiness(),
    section("models", models),
    section("maps", maps),
    section("calibrations", calibrations),
    section("rates", rates),
  ]);
  setTimeout(function again() {
    rates().catch(() => {}).finally(() => setTimeout(again, 10000));
  }, 3000);
});
