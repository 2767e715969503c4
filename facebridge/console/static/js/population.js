// Population: the cohort of the deployment's own people, the FAR the stated (shipped raw) thresholds
// are estimated to reach on it (GET /calibration), and that estimate over reloads
// (GET /calibration/history).

import { api } from "./api.js";
import { timeChart } from "./charts.js";
import { badge, el, fill, notice, num, sci, start, table, when } from "./ui.js";

function cohorts(report) {
  if (!report.cohorts.length) {
    fill(
      "cohorts",
      notice("No cohort is configured: every threshold is the shipped calibration population's (LFW and CelebA press photos), whose FAR is known to drift on other people. Build one with facebridge cohort build into FACEBRIDGE_COHORT_DIR and reload the maps.", "warn"),
    );
    return;
  }
  fill(
    "cohorts",
    table(
      [{ label: "cohort" }, { label: "space" }, { label: "templates", num: true }, { label: "read from" }, { label: "sampled" }, { label: "created" }],
      report.cohorts.map((c) => [c.id, el("code", {}, c.space.model), c.provenance.count, `${c.provenance.kind}: ${c.provenance.source}`, c.provenance.sampled ? "yes" : "no", c.provenance.created]),
    ),
  );
}

function drift(report) {
  if (!report.drift.length) {
    fill("drift", notice("No estimate: it needs a cohort in the comparison's space (and, across models, one in the source space too).", "warn"));
    return;
  }
  fill(
    "drift",
    el("p", { class: "hint" }, report.drift_method),
    table(
      [{ label: "comparison" }, { label: "operating point" }, { label: "threshold", num: true }, { label: "nominal FAR", num: true }, { label: "estimated FAR", num: true }, { label: "95% interval" }, { label: "ratio", num: true }, { label: "cohort pairs", num: true }, { label: "" }],
      report.drift.map((d) => [
        el("code", {}, d.comparison),
        d.operating_point,
        num(d.threshold, 4),
        sci(d.nominal_far, 0),
        sci(d.estimated_far),
        `${sci(d.interval[0])} – ${sci(d.interval[1])}`,
        `${num(d.ratio, 2)}×`,
        d.pairs,
        d.off ? badge("off by more than 2×", "bad") : badge("within 2×", "ok"),
      ]),
    ),
  );
}

function trend(history) {
  const comparisons = [...new Set(history.snapshots.flatMap((s) => s.estimates.map((e) => e.comparison)))].sort();
  if (!comparisons.length) {
    fill("trend", notice(`No estimate in the ${history.snapshots.length} load(s) since the service started. ${history.note}.`));
    return;
  }
  const select = el("select", { id: "trend-comparison" }, comparisons.map((c) => el("option", { value: c }, c)));
  const draw = () => {
    const points = ["far_1e-2", "far_1e-3", "far_1e-4"];
    const series = points.map((point, index) => ({
      label: point,
      cls: `series-${index}`,
      points: history.snapshots.flatMap((snapshot) =>
        snapshot.estimates
          .filter((e) => e.comparison === select.value && e.operating_point === point)
          .map((e) => ({ t: new Date(snapshot.at), y: Math.max(e.estimated_far, 1e-9) })),
      ),
    })).filter((one) => one.points.length);
    fill(
      "trend",
      el(
        "figure",
        {},
        timeChart({
          title: `Estimated FAR of ${select.value}'s shipped thresholds at each load`,
          description: "Estimated FAR per operating point at each load and reload of the maps and cohorts, log scale; dashed lines: the nominal FARs.",
          series,
          hlines: [1e-2, 1e-3, 1e-4].map((far) => ({ y: far, label: `nominal ${sci(far, 0)}`, cls: "nominal" })),
          log: true,
          yLabel: "estimated FAR (log)",
        }),
        el("figcaption", {}, `${history.snapshots.length} load(s) kept (at most ${history.kept}); ${history.note}.`),
      ),
      table(
        [{ label: "loaded" }, { label: "event" }, { label: "maps", num: true }, { label: "cohorts" }, { label: "far_1e-3 estimate", num: true }],
        history.snapshots.map((snapshot) => {
          const e = snapshot.estimates.find((x) => x.comparison === select.value && x.operating_point === "far_1e-3");
          return [when(snapshot.at), snapshot.event, snapshot.maps, snapshot.cohorts.join(", ") || "–", e ? sci(e.estimated_far) : "–"];
        }),
      ),
    );
  };
  select.addEventListener("change", draw);
  fill("trend-controls", el("label", { for: "trend-comparison" }, "Comparison"), select);
  draw();
}

function inForce(report) {
  fill(
    "in-force",
    table(
      [{ label: "comparison" }, { label: "units" }, { label: "calibration" }, { label: "cohorts" }, { label: "why" }],
      report.comparisons.map((c) => [el("code", {}, c.comparison), c.units, c.file ? `${c.source} (${c.file})` : c.source, c.cohorts.join(", ") || "–", c.note]),
    ),
    report.refused.length ? table([{ label: "refused" }], report.refused.map((r) => [r])) : null,
  );
}

start(async () => {
  const [report, history] = await Promise.all([api("/calibration"), api("/calibration/history")]);
  cohorts(report);
  drift(report);
  trend(history);
  inForce(report);
});
