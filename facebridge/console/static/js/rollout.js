// Roll-out: what the pair store holds per model pair and over time (GET /pairs/stats, /pairs/timeline),
// the refit history (GET /refits), and in-place gallery migrations (GET /migrations).

import { api, ApiError } from "./api.js";
import { timeChart } from "./charts.js";
import { badge, el, fill, notice, pct, section, start, table, when } from "./ui.js";

async function pairs() {
  let stats;
  try {
    stats = await api("/pairs/stats");
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 404) {
      fill("pairs", notice(`Pair recording is off: ${failure.detail}`, "warn"));
      return;
    }
    throw failure;
  }
  const timeline = await api("/pairs/timeline?bucket=day");
  fill(
    "pairs",
    el("p", {}, `Back-end: ${stats.backend} (schema ${stats.schema_version}); retention: ${stats.retention_days ? `${stats.retention_days} days` : "kept"}, ${stats.max_rows_per_pair ? `at most ${stats.max_rows_per_pair} pairs per model pair` : "no cap"}.`),
    stats.model_pairs.length
      ? table(
          [{ label: "model pair" }, { label: "pairs", num: true }, { label: "subjects", num: true }, { label: "first" }, { label: "last" }],
          stats.model_pairs.map((p) => [el("code", {}, `${p.source_model} + ${p.target_model}`), p.pairs, p.subjects, when(p.first), when(p.last)]),
        )
      : notice("No pair recorded yet."),
  );
  if (!timeline.model_pairs.length) {
    fill("timeline");
    return;
  }
  const series = timeline.model_pairs.map((entry, index) => {
    let total = 0;
    return {
      label: `${entry.source_model} + ${entry.target_model}`,
      cls: `series-${index % 5}`,
      points: entry.buckets.map((b) => ({ t: new Date(b.start), y: (total += b.pairs) })),
    };
  });
  fill(
    "timeline",
    el(
      "figure",
      {},
      timeChart({
        title: "Pairs recorded over time, per model pair (cumulative, by UTC day)",
        description: "Cumulative count of recorded template pairs per model pair, one point per UTC day with pairs.",
        series,
        yLabel: "pairs (cumulative)",
      }),
      el("figcaption", {}, "Cumulative pairs per model pair by UTC day (GET /pairs/timeline)."),
    ),
  );
}

function scores(s) {
  return s ? `${pct(s.accuracy)} / ${pct(s.tar_far_1e3)}` : "–";
}

async function refits() {
  const history = await api("/refits");
  if (!history.refits.length) {
    fill("refits", notice(`No refit recorded: facebridge refit appends each decision to ${history.file} in the mappings folder.`));
    return;
  }
  fill(
    "refits",
    table(
      [{ label: "when" }, { label: "map" }, { label: "chosen" }, { label: "before: accuracy / TAR@1e-3" }, { label: "after" }, { label: "held-out subjects", num: true }, { label: "verdict" }],
      history.refits.map((r) => [
        when(r.at),
        el("code", {}, `${r.source}->${r.target}`),
        r.choice,
        scores(r.before),
        scores(r.after),
        r.split.heldout_subjects ?? "–",
        el("span", {}, r.improved ? badge("better", "ok") : badge("not better", "warn"), " ", r.written ? `written (${r.file})` : "not written"),
      ]),
      "Scores on deployment subjects held out of every refit.",
    ),
  );
}

function job(j, index) {
  const d = j.description || {};
  return el(
    "details",
    { open: index === 0 },
    el("summary", {}, `${j.job}: ${j.state}, ${j.rows_written} rows in ${j.batches} batches, ${j.passes} pass(es), ${j.problems} problem(s)`),
    table(
      [{ label: "table" }, { label: "from" }, { label: "to" }, { label: "maps" }, { label: "started" }, { label: "updated" }, { label: "finished" }, { label: "checksum (sum)" }],
      [[d.table || "–", `${d.column || "?"} (${d.source || "?"})`, `${d.to_column || "?"} (${d.target || "?"})`, (d.maps || []).map((m) => m.id).join(", ") || "–", when(j.started_at), when(j.updated_at), when(j.finished_at), el("code", {}, j.checksum)]],
    ),
    table(
      [{ label: "batch", num: true }, { label: "pass", num: true }, { label: "keys" }, { label: "rows", num: true }, { label: "checksum" }, { label: "written" }],
      j.recent_batches.map((b) => [b.batch, b.pass_number, `${b.first_id} … ${b.last_id}`, b.rows, el("code", {}, b.checksum), when(b.written_at)]),
      "Latest batches",
    ),
    j.problem_sample.length
      ? table([{ label: "row key" }, { label: "problem" }, { label: "found" }], j.problem_sample.map((p) => [el("code", {}, p.id), p.reason, when(p.found_at)]), "First problems")
      : null,
  );
}

async function migrations() {
  const report = await api("/migrations");
  if (!report.configured) {
    fill("migrations", notice(`Nothing configured: ${report.note.replace(/^no database configured: /, "")}.`));
    return;
  }
  fill(
    "migrations",
    el("p", {}, `Database: `, el("code", {}, report.database), `. ${report.note}.`),
    report.jobs.length
      ? table(
          [{ label: "job" }, { label: "state" }, { label: "rows", num: true }, { label: "batches", num: true }, { label: "passes", num: true }, { label: "problems", num: true }, { label: "updated" }],
          report.jobs.map((j) => [el("code", {}, j.job), badge(j.state, j.state === "complete" || j.state === "swapped" ? "ok" : j.state === "incomplete" ? "bad" : "info"), j.rows_written, j.batches, j.passes, j.problems, when(j.updated_at)]),
        )
      : null,
    report.jobs.map(job),
  );
}

start(async () => {
  await Promise.all([section("pairs", pairs), section("refits", refits), section("migrations", migrations)]);
});
