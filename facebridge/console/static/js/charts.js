// Charts as inline SVG, drawn here (no chart library): DET curves on log axes, score histograms, and
// time series. Colours and strokes come from classes in console.css (CSP allows no inline style).

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 400;
const MARGIN = { left: 66, right: 18, top: 18, bottom: 52 };
let counter = 0;

function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function frame(title, description, height = HEIGHT) {
  counter += 1;
  const id = `chart-${counter}`;
  const svg = s("svg", {
    class: "chart",
    viewBox: `0 0 ${WIDTH} ${height}`,
    role: "img",
    "aria-labelledby": `${id}-title ${id}-desc`,
  });
  svg.append(s("title", { id: `${id}-title` }, title), s("desc", { id: `${id}-desc` }, description));
  return svg;
}

function plotArea(height = HEIGHT) {
  return {
    x0: MARGIN.left,
    x1: WIDTH - MARGIN.right,
    y0: height - MARGIN.bottom,
    y1: MARGIN.top,
  };
}

function path(points) {
  return points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("");
}

function decadeLabel(exponent) {
  return exponent === 0 ? "1" : `1e${exponent}`;
}

function legend(svg, area, entries, corner = "top") {
  // top: one row along the top edge; bottom: stacked in the bottom-left corner (empty on a DET curve)
  const group = s("g", { class: "legend" });
  let x = area.x0 + 10;
  let y = corner === "top" ? area.y1 + 14 : area.y0 - 12 - 18 * (entries.length - 1);
  for (const entry of entries) {
    group.append(
      s("line", { x1: x, x2: x + 22, y1: y, y2: y, class: `legend-line ${entry.cls}` }),
      s("text", { x: x + 28, y: y + 4, class: "legend-text" }, entry.label),
    );
    if (corner === "top") x += 40 + entry.label.length * 6.6;
    else y += 18;
  }
  svg.append(group);
}

/** The lowest decade that holds every positive value (at most `floor`). */
export function lowestDecade(values, floor = -6) {
  const positive = values.filter((v) => v > 0);
  if (!positive.length) return -4;
  return Math.max(floor, Math.floor(Math.log10(Math.min(...positive))));
}

/** Where the DET curve is at `threshold` (points sorted by threshold, descending): linear between
 * the two points around it. */
export function detAt(points, threshold) {
  if (!points.length) return null;
  if (threshold >= points[0].threshold) return { fmr: points[0].fmr, fnmr: points[0].fnmr };
  for (let i = 1; i < points.length; i += 1) {
    const hi = points[i - 1];
    const lo = points[i];
    if (threshold >= lo.threshold) {
      const t = hi.threshold === lo.threshold ? 0 : (hi.threshold - threshold) / (hi.threshold - lo.threshold);
      return { fmr: hi.fmr + t * (lo.fmr - hi.fmr), fnmr: hi.fnmr + t * (lo.fnmr - hi.fnmr) };
    }
  }
  const last = points[points.length - 1];
  return { fmr: last.fmr, fnmr: last.fnmr };
}

/**
 * DET curve: FNMR against FMR, both on log axes.
 * series: [{label, cls, points: [{fmr, fnmr}]}]
 * marks: [{fmr, fnmr, label, cls, interval: [lo, hi] | null, range: [lo, hi] | null}]
 */
export function detChart({ title, description, series, marks = [] }) {
  const svg = frame(title, description);
  const area = plotArea();
  const allFmr = series.flatMap((one) => one.points.map((p) => p.fmr)).concat(marks.flatMap((m) => [m.fmr, ...(m.range || [])]));
  const allFnmr = series.flatMap((one) => one.points.map((p) => p.fnmr)).concat(marks.map((m) => m.fnmr));
  const xLow = lowestDecade(allFmr);
  const yLow = lowestDecade(allFnmr, -5);
  const x = (v) => area.x0 + ((Math.log10(Math.max(v, 10 ** xLow)) - xLow) / -xLow) * (area.x1 - area.x0);
  const y = (v) => area.y0 - ((Math.log10(Math.max(v, 10 ** yLow)) - yLow) / -yLow) * (area.y0 - area.y1);

  for (let e = xLow; e <= 0; e += 1) {
    svg.append(
      s("line", { x1: x(10 ** e), x2: x(10 ** e), y1: area.y0, y2: area.y1, class: "grid" }),
      s("text", { x: x(10 ** e), y: area.y0 + 16, "text-anchor": "middle", class: "tick" }, decadeLabel(e)),
    );
  }
  for (let e = yLow; e <= 0; e += 1) {
    svg.append(
      s("line", { x1: area.x0, x2: area.x1, y1: y(10 ** e), y2: y(10 ** e), class: "grid" }),
      s("text", { x: area.x0 - 8, y: y(10 ** e) + 4, "text-anchor": "end", class: "tick" }, decadeLabel(e)),
    );
  }
  svg.append(
    s("rect", { x: area.x0, y: area.y1, width: area.x1 - area.x0, height: area.y0 - area.y1, class: "frame" }),
    s("text", { x: (area.x0 + area.x1) / 2, y: HEIGHT - 12, "text-anchor": "middle", class: "axis-label" },
      "FMR: share of impostor pairs accepted (log)"),
    s("text", { x: 16, y: (area.y0 + area.y1) / 2, "text-anchor": "middle", class: "axis-label",
      transform: `rotate(-90 16 ${(area.y0 + area.y1) / 2})` }, "FNMR: genuine pairs rejected (log)"),
  );
  for (const one of series) {
    // a rate of 0 has no place on a log axis: such points (beyond the measurable range) are left out
    const points = one.points.filter((p) => p.fmr > 0 && p.fnmr > 0).map((p) => [x(p.fmr), y(p.fnmr)]);
    svg.append(s("path", { d: path(points), class: `series ${one.cls}` }));
  }
  const placed = [];
  marks.forEach((mark) => {
    const cx = x(mark.fmr);
    const cy = y(mark.fnmr);
    const cls = mark.cls || "";
    if (mark.range) svg.append(s("line", { x1: x(mark.range[0]), x2: x(mark.range[1]), y1: cy, y2: cy, class: "mark-range" }));
    if (mark.interval) svg.append(s("line", { x1: x(mark.interval[0]), x2: x(mark.interval[1]), y1: cy, y2: cy, class: "mark-bar" }));
    svg.append(s("circle", { cx, cy, r: cls.includes("score") ? 6 : 4.5, class: `mark ${cls}` }));
    // labels of one kind sit on one side of the curve (native below-left, the others above-right),
    // moved further out while they would overlap a label already placed
    const below = cls.includes("native");
    const width = mark.label.length * 6.6;
    const left = below ? Math.max(cx - 6, area.x0 + width + 4) - width : Math.min(cx + 6, area.x1 - width - 4);
    const clash = (top) => placed.some((b) => left < b.right && left + width > b.left && top - 11 < b.bottom && top + 2 > b.top);
    const away = [0, 1, 2, 3, 4, 5, 6, 7].map((k) => (below ? cy + 17 + 13 * k : cy - 9 - 13 * k));
    const back = [0, 1, 2, 3, 4, 5, 6, 7].map((k) => (below ? cy - 9 - 13 * k : cy + 17 + 13 * k));
    const inside = (top) => top >= area.y1 + 12 && top <= area.y0 - 4;
    const candidates = away.concat(back).filter(inside);
    const labelY = candidates.find((top) => !clash(top)) ?? (candidates[0] ?? cy);
    placed.push({ left, right: left + width, top: labelY - 11, bottom: labelY + 2 });
    svg.append(s("text", { x: left, y: labelY, class: `mark-label ${cls}` }, mark.label));
  });
  legend(svg, area, series.map((one) => ({ label: one.label, cls: one.cls })), "bottom");
  return svg;
}

/**
 * Histograms of scores on shared bins, as densities so that sets of different sizes compare.
 * bins: {low, high, count}; series: [{label, cls, counts}]; markers: [{x, label, cls}]
 */
export function histogramChart({ title, description, bins, series, markers = [] }) {
  const height = 300;
  const svg = frame(title, description, height);
  const area = plotArea(height);
  const width = (bins.high - bins.low) / bins.count;
  const densities = series.map((one) => {
    const total = one.counts.reduce((a, b) => a + b, 0) || 1;
    return one.counts.map((c) => c / total / width);
  });
  const top = Math.max(1e-9, ...densities.flat()) * 1.08;
  const x = (v) => area.x0 + ((v - bins.low) / (bins.high - bins.low)) * (area.x1 - area.x0);
  const y = (v) => area.y0 - (v / top) * (area.y0 - area.y1);
  for (let t = Math.ceil(bins.low * 5) / 5; t <= bins.high + 1e-9; t += 0.2) {
    const value = Math.round(t * 10) / 10;
    svg.append(
      s("line", { x1: x(value), x2: x(value), y1: area.y0, y2: area.y1, class: "grid" }),
      s("text", { x: x(value), y: area.y0 + 16, "text-anchor": "middle", class: "tick" }, value.toFixed(1)),
    );
  }
  svg.append(
    s("rect", { x: area.x0, y: area.y1, width: area.x1 - area.x0, height: area.y0 - area.y1, class: "frame" }),
    s("text", { x: (area.x0 + area.x1) / 2, y: height - 12, "text-anchor": "middle", class: "axis-label" }, "cosine score"),
    s("text", { x: 16, y: (area.y0 + area.y1) / 2, "text-anchor": "middle", class: "axis-label",
      transform: `rotate(-90 16 ${(area.y0 + area.y1) / 2})` }, "density"),
  );
  series.forEach((one, index) => {
    const points = [[x(bins.low), y(0)]];
    densities[index].forEach((d, k) => {
      points.push([x(bins.low + k * width), y(d)], [x(bins.low + (k + 1) * width), y(d)]);
    });
    points.push([x(bins.high), y(0)]);
    svg.append(s("path", { d: `${path(points)}Z`, class: `area ${one.cls}` }));
  });
  markers.forEach((marker, index) => {
    const mx = x(Math.min(bins.high, Math.max(bins.low, marker.x)));
    svg.append(
      s("line", { x1: mx, x2: mx, y1: area.y0, y2: area.y1 + 20, class: `vline ${marker.cls || ""}` }),
      s("text", { x: mx + 3, y: area.y1 + 32 + (index % 3) * 13, class: `mark-label ${marker.cls || ""}` }, marker.label),
    );
  });
  legend(svg, area, series.map((one) => ({ label: one.label, cls: one.cls })));
  return svg;
}

/**
 * Values over time. series: [{label, cls, points: [{t: Date, y}]}]; hlines: [{y, label, cls}]
 */
export function timeChart({ title, description, series, hlines = [], log = false, yLabel = "" }) {
  const height = 300;
  const svg = frame(title, description, height);
  const area = plotArea(height);
  const times = series.flatMap((one) => one.points.map((p) => p.t.getTime()));
  const values = series.flatMap((one) => one.points.map((p) => p.y)).concat(hlines.map((h) => h.y));
  let t0 = Math.min(...times);
  let t1 = Math.max(...times);
  if (!(t1 > t0)) {
    t0 -= 3600e3;
    t1 += 3600e3;
  }
  let y0;
  let y1;
  let y;
  if (log) {
    y0 = lowestDecade(values, -8);
    y1 = Math.ceil(Math.log10(Math.max(...values.filter((v) => v > 0), 10 ** (y0 + 1))));
    if (y1 <= y0) y1 = y0 + 1;
    y = (v) => area.y0 - ((Math.log10(Math.max(v, 10 ** y0)) - y0) / (y1 - y0)) * (area.y0 - area.y1);
    for (let e = y0; e <= y1; e += 1) {
      svg.append(
        s("line", { x1: area.x0, x2: area.x1, y1: y(10 ** e), y2: y(10 ** e), class: "grid" }),
        s("text", { x: area.x0 - 8, y: y(10 ** e) + 4, "text-anchor": "end", class: "tick" }, decadeLabel(e)),
      );
    }
  } else {
    y0 = 0;
    y1 = Math.max(1, ...values) * 1.1;
    y = (v) => area.y0 - ((v - y0) / (y1 - y0)) * (area.y0 - area.y1);
    const step = 10 ** Math.floor(Math.log10(y1 / 2));
    for (let v = 0; v <= y1; v += step * Math.ceil(y1 / step / 6)) {
      svg.append(
        s("line", { x1: area.x0, x2: area.x1, y1: y(v), y2: y(v), class: "grid" }),
        s("text", { x: area.x0 - 8, y: y(v) + 4, "text-anchor": "end", class: "tick" }, String(Math.round(v))),
      );
    }
  }
  const x = (t) => area.x0 + ((t - t0) / (t1 - t0)) * (area.x1 - area.x0);
  [t0, (t0 + t1) / 2, t1].forEach((t, index) => {
    const anchor = ["start", "middle", "end"][index];
    svg.append(s("text", { x: x(t), y: area.y0 + 16, "text-anchor": anchor, class: "tick" },
      new Date(t).toISOString().slice(0, 16).replace("T", " ")));
  });
  svg.append(
    s("rect", { x: area.x0, y: area.y1, width: area.x1 - area.x0, height: area.y0 - area.y1, class: "frame" }),
    s("text", { x: (area.x0 + area.x1) / 2, y: height - 12, "text-anchor": "middle", class: "axis-label" }, "time (UTC)"),
    s("text", { x: 16, y: (area.y0 + area.y1) / 2, "text-anchor": "middle", class: "axis-label",
      transform: `rotate(-90 16 ${(area.y0 + area.y1) / 2})` }, yLabel),
  );
  for (const line of hlines) {
    svg.append(
      s("line", { x1: area.x0, x2: area.x1, y1: y(line.y), y2: y(line.y), class: line.cls || "nominal" }),
      s("text", { x: area.x1 - 4, y: y(line.y) - 5, "text-anchor": "end", class: "tick" }, line.label),
    );
  }
  for (const one of series) {
    const points = one.points.map((p) => [x(p.t.getTime()), y(p.y)]);
    svg.append(s("path", { d: path(points), class: `series ${one.cls}` }));
    for (const [px, py] of points) svg.append(s("circle", { cx: px, cy: py, r: 3.5, class: `dot ${one.cls}` }));
  }
  legend(svg, area, series.map((one) => ({ label: one.label, cls: one.cls })));
  return svg;
}
