// fedloom dashboard: small SVG charts (line, bar, heat map) with axes, ticks, legends and hover values.
// No libraries: the dashboard must work offline, so every chart is drawn here as plain SVG.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

function svgEl(tag, attrs, parent) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

function fmtValue(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  if (Number.isInteger(v)) return String(v);
  return String(parseFloat(v.toFixed(a >= 100 ? 1 : 4)));
}

// "nice" ticks covering lo..hi (about n of them): the first at or below lo, the last at or above hi
function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + Math.max(1, Math.abs(lo) * 0.1); lo = lo - (lo === 0 ? 0 : Math.abs(lo) * 0.1); }
  const raw = (hi - lo) / Math.max(1, n);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  const last = Math.ceil(hi / step - 1e-9) * step;
  for (let t = Math.floor(lo / step + 1e-9) * step; t <= last + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

function frame(container, opts) {
  container.innerHTML = "";
  const width = opts.width || Math.max(320, container.clientWidth || 560);
  const height = opts.height || 240;
  const m = { top: 16, right: 16, bottom: 36, left: 58 };
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" }, container);
  if (opts.title) svgEl("title", {}, svg).textContent = opts.title;
  return { svg, width, height, m, w: width - m.left - m.right, h: height - m.top - m.bottom };
}

function axes(f, xs, ys, labels) {
  const g = svgEl("g", { class: "axes" }, f.svg);
  svgEl("line", { x1: f.m.left, y1: f.m.top + f.h, x2: f.m.left + f.w, y2: f.m.top + f.h, class: "axis" }, g);
  svgEl("line", { x1: f.m.left, y1: f.m.top, x2: f.m.left, y2: f.m.top + f.h, class: "axis" }, g);
  for (const t of xs.ticks) {
    const x = xs.scale(t);
    svgEl("line", { x1: x, y1: f.m.top + f.h, x2: x, y2: f.m.top + f.h + 4, class: "axis" }, g);
    svgEl("text", { x, y: f.m.top + f.h + 16, "text-anchor": "middle", class: "tick" }, g).textContent = xs.fmt(t);
  }
  for (const t of ys.ticks) {
    const y = ys.scale(t);
    svgEl("line", { x1: f.m.left, y1: y, x2: f.m.left + f.w, y2: y, class: "grid" }, g);
    svgEl("text", { x: f.m.left - 6, y: y + 4, "text-anchor": "end", class: "tick" }, g).textContent = fmtValue(t);
  }
  if (labels && labels.x) {
    svgEl("text", { x: f.m.left + f.w / 2, y: f.height - 4, "text-anchor": "middle", class: "label" }, g).textContent = labels.x;
  }
}

function linearScale(lo, hi, a, b) {
  const span = hi - lo || 1;
  return (v) => a + ((v - lo) / span) * (b - a);
}

function legend(container, series) {
  const box = document.createElement("div");
  box.className = "legend";
  series.forEach((s, i) => {
    const item = document.createElement("span");
    item.className = "legend-item";
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = s.color || PALETTE[i % PALETTE.length];
    item.appendChild(sw);
    item.appendChild(document.createTextNode(s.name));
    box.appendChild(item);
  });
  container.appendChild(box);
}

// series: [{name, points: [[x, y], ...]}]; one <circle class="point"> per finite point
function lineChart(container, series, opts = {}) {
  const f = frame(container, opts);
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && Number.isFinite(p[1])));
  if (!all.length) {
    svgEl("text", { x: f.width / 2, y: f.height / 2, "text-anchor": "middle", class: "empty" }, f.svg).textContent = opts.empty || "no data yet";
    return f.svg;
  }
  const xsRaw = all.map((p) => p[0]);
  const ysRaw = all.map((p) => p[1]);
  let [x0, x1] = [Math.min(...xsRaw), Math.max(...xsRaw)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  const yt = niceTicks(Math.min(...ysRaw), Math.max(...ysRaw), 5);
  const [y0, y1] = [Math.min(yt[0], ...ysRaw), Math.max(yt[yt.length - 1], ...ysRaw)];
  const sx = linearScale(x0, x1, f.m.left, f.m.left + f.w);
  const sy = linearScale(y0, y1, f.m.top + f.h, f.m.top);
  const xt = niceTicks(x0, x1, Math.min(8, Math.max(1, x1 - x0))).filter((t) => t >= x0 && t <= x1 && Number.isInteger(t));
  axes(f, { ticks: xt, scale: sx, fmt: (t) => String(t) }, { ticks: yt, scale: sy }, { x: opts.xLabel || "round" });
  const tip = hoverTip(container);
  series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    const pts = s.points.filter((p) => p[1] !== null && Number.isFinite(p[1]));
    const path = pts.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    svgEl("path", { d: path, fill: "none", stroke: color, "stroke-width": 2, class: "line", "data-series": s.name }, f.svg);
    const g = svgEl("g", { class: "points", "data-series": s.name }, f.svg);
    for (const p of pts) {
      const c = svgEl("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 3.5, fill: color, class: "point" }, g);
      c.dataset.x = p[0];
      c.dataset.y = p[1];
      c.addEventListener("mouseenter", (ev) => tip.show(ev, `${s.name} · ${opts.xLabel || "round"} ${p[0]}: ${fmtValue(p[1])}`));
      c.addEventListener("mouseleave", () => tip.hide());
    }
  });
  legend(container, series);
  return f.svg;
}

// bars: [{label, value}]
function barChart(container, bars, opts = {}) {
  const f = frame(container, opts);
  if (!bars.length) {
    svgEl("text", { x: f.width / 2, y: f.height / 2, "text-anchor": "middle", class: "empty" }, f.svg).textContent = "no data yet";
    return f.svg;
  }
  const values = bars.map((b) => b.value || 0);
  const yt = niceTicks(0, Math.max(...values, 0), 5);
  const sy = linearScale(0, Math.max(yt[yt.length - 1], ...values), f.m.top + f.h, f.m.top);
  const band = f.w / bars.length;
  const every = Math.max(1, Math.ceil(bars.length / 12));
  const xt = bars.map((_, i) => i).filter((i) => i % every === 0);
  axes(f, { ticks: xt, scale: (i) => f.m.left + band * (i + 0.5), fmt: (i) => bars[i].label }, { ticks: yt, scale: sy }, { x: opts.xLabel || "round" });
  const tip = hoverTip(container);
  bars.forEach((b, i) => {
    const y = sy(b.value || 0);
    const r = svgEl("rect", { x: f.m.left + band * i + band * 0.15, y, width: Math.max(1, band * 0.7), height: f.m.top + f.h - y, fill: opts.color || PALETTE[0], class: "bar" }, f.svg);
    r.addEventListener("mouseenter", (ev) => tip.show(ev, `${opts.xLabel || "round"} ${b.label}: ${fmtValue(b.value)}${opts.unit || ""}`));
    r.addEventListener("mouseleave", () => tip.hide());
  });
  return f.svg;
}

// rows: client names, cols: round numbers, cells: strings of one state letter per column
function heatMap(container, rows, cols, cells, colors, names) {
  container.innerHTML = "";
  const cell = Math.max(6, Math.min(18, Math.floor(((container.clientWidth || 700) - 140) / Math.max(1, cols.length))));
  const left = 130, top = 22;
  const width = left + cell * cols.length + 10, height = top + cell * rows.length + 10;
  const svg = svgEl("svg", { width, height, class: "chart heatmap" }, container);
  const every = Math.max(1, Math.ceil(cols.length / 20));
  cols.forEach((c, j) => {
    if (j % every === 0) svgEl("text", { x: left + cell * (j + 0.5), y: top - 6, "text-anchor": "middle", class: "tick" }, svg).textContent = c;
  });
  const tip = hoverTip(container);
  rows.forEach((r, i) => {
    const label = (names && names[r]) || r;
    svgEl("text", { x: left - 6, y: top + cell * (i + 0.75), "text-anchor": "end", class: "tick" }, svg).textContent = label.length > 18 ? label.slice(0, 17) + "…" : label;
    for (let j = 0; j < cols.length; j++) {
      const state = cells[i][j];
      const rect = svgEl("rect", { x: left + cell * j, y: top + cell * i, width: cell - 1, height: cell - 1, fill: colors[state].color, class: "cell" }, svg);
      rect.addEventListener("mouseenter", (ev) => tip.show(ev, `${label} · round ${cols[j]}: ${colors[state].label}`));
      rect.addEventListener("mouseleave", () => tip.hide());
    }
  });
  legend(container, Object.values(colors).map((c) => ({ name: c.label, color: c.color })));
  return svg;
}

function hoverTip(container) {
  container.style.position = "relative";
  const tip = document.createElement("div");
  tip.className = "tip";
  tip.hidden = true;
  container.appendChild(tip);
  return {
    show(ev, text) {
      const box = container.getBoundingClientRect();
      tip.textContent = text;
      tip.hidden = false;
      tip.style.left = `${ev.clientX - box.left + 10}px`;
      tip.style.top = `${ev.clientY - box.top - 28}px`;
    },
    hide() { tip.hidden = true; },
  };
}

window.FedCharts = { lineChart, barChart, heatMap, fmtValue, PALETTE };
