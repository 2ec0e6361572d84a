// The dashboard's live charts: uPlot line charts over the last few minutes,
// fed one point per snapshot. Each chart keeps its own columns; a chart
// whose series are not known in advance (hashrate per worker) grows a
// series when a new name appears.
"use strict";

const KEEP = 300; // points per series: five minutes at one snapshot a second
const COLORS = ["#2563eb", "#15803d", "#b91c1c", "#b45309", "#7c3aed", "#0891b2", "#db2777", "#4d7c0f", "#64748b"];

class LiveChart {
  /** `names`: the series shown from the start; `dynamic`: more may come. */
  constructor(figure, names, { dynamic = false } = {}) {
    this.figure = figure;
    this.names = [];
    this.columns = [[]];
    this.dynamic = dynamic;
    const opts = {
      width: Math.max(320, figure.clientWidth - 12),
      height: 190,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      series: [{}],
      axes: [{}, { size: 60 }],
      legend: { live: false },
    };
    this.plot = new uPlot(opts, this.columns, figure);
    names.forEach((n) => this.ensure(n));
    this.points = 0;
    new ResizeObserver(() => this.plot.setSize({ width: Math.max(320, figure.clientWidth - 12), height: 190 }))
      .observe(figure);
  }

  ensure(name) {
    if (this.names.includes(name)) return;
    const color = COLORS[this.names.length % COLORS.length];
    this.names.push(name);
    // A series that appears late has no values for the points before it.
    this.columns.push(this.columns[0].map(() => null));
    this.plot.addSeries({ label: name, stroke: color, width: name === "total" ? 2 : 1.5, spanGaps: false },
      this.names.length);
  }

  /** Adds the point at `t` (seconds): `values` by series name (missing = no value). */
  push(t, values) {
    if (this.dynamic) Object.keys(values).forEach((n) => this.ensure(n));
    this.columns[0].push(t);
    this.names.forEach((n, i) => this.columns[i + 1].push(values[n] ?? null));
    if (this.columns[0].length > KEEP) this.columns.forEach((c) => c.shift());
    this.points += 1;
    this.plot.setData(this.columns);
    this.figure.dataset.points = String(this.points);
  }
}

/** Per-second rates of counters between two snapshots (0 after a reset). */
function rate(now, before, dt) {
  if (before === undefined || dt <= 0) return null;
  return Math.max(0, (now - before) / dt);
}

window.LiveChart = LiveChart;
window.rate = rate;
