// Prometheus text exposition format (what GET /metrics answers) into samples.

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function unescape(value) {
  return value.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
}

function number(text) {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  return Number(text);
}

/** [{name, labels, value}] for every sample line; comments and malformed lines are skipped. */
export function parsePrometheus(text) {
  const samples = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const match = LINE.exec(line);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[2] || "").matchAll(LABEL)) labels[pair[1]] = unescape(pair[2]);
    samples.push({ name: match[1], labels, value: number(match[3]) });
  }
  return samples;
}

/** Sum of `name`'s samples grouped by the value of one label. */
export function sumBy(samples, name, label, filter = () => true) {
  const totals = new Map();
  for (const sample of samples) {
    if (sample.name !== name || !filter(sample.labels)) continue;
    const key = sample.labels[label] ?? "";
    totals.set(key, (totals.get(key) || 0) + sample.value);
  }
  return totals;
}
