/** Geometry of the performance view's small line and bar charts (pure, no DOM; unit-tested). */

export interface Point {
  x: number;
  y: number;
}

export interface ChartGeometry {
  /** SVG path data of the line, empty when there is nothing to draw. */
  path: string;
  /** Dots (for series with few points, e.g. per-request values). */
  dots: Point[];
  /** The top of the y axis. */
  yMax: number;
  /** Y-axis gridlines: value and pixel position. */
  ticks: { value: number; y: number }[];
}

/** A round axis maximum ≥ the largest value: 1, 2, 2.5, 5 × 10^n. */
export function niceMax(values: number[], floor = 1): number {
  const max = Math.max(floor, ...values.filter((v) => Number.isFinite(v)));
  const exp = Math.pow(10, Math.floor(Math.log10(max)));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (m * exp >= max) {
      return m * exp;
    }
  }
  return 10 * exp;
}

/** Lay out `values` (oldest first) over `width` × `height`, the newest at the right edge.
 * `capacity` is how many values fit across, so the chart scrolls as values arrive. */
export function lineChart(values: (number | null | undefined)[], width: number, height: number, capacity: number, floor = 1): ChartGeometry {
  const finite = values.map((v) => (v === null || v === undefined || !Number.isFinite(v) ? undefined : v));
  const yMax = niceMax(finite.filter((v): v is number => v !== undefined), floor);
  const step = capacity > 1 ? width / (capacity - 1) : width;
  const offset = Math.max(0, capacity - values.length);
  const points: (Point | undefined)[] = finite.map((v, i) =>
    v === undefined ? undefined : { x: round((offset + i) * step), y: round(height - (v / yMax) * height) },
  );
  let path = "";
  let pen = false;
  for (const p of points) {
    if (!p) {
      pen = false;
      continue;
    }
    path += `${pen ? "L" : "M"}${p.x} ${p.y} `;
    pen = true;
  }
  const ticks = [0.5, 1].map((f) => ({ value: yMax * f, y: round(height - f * height) }));
  return { path: path.trim(), dots: points.filter((p): p is Point => p !== undefined), yMax, ticks };
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

/** Latency parts of one request (ms): queue, load, prefill (to first token), decode (the rest). */
export function latencyBreakdown(r: { queueMs: number; loadMs: number; ttftMs?: number | null; totalMs: number }): {
  queue: number;
  load: number;
  prefill: number;
  decode: number;
} {
  const queue = Math.max(0, r.queueMs);
  const load = Math.max(0, r.loadMs);
  const ttft = r.ttftMs ?? r.totalMs;
  const prefill = Math.max(0, ttft - queue - load);
  const decode = Math.max(0, r.totalMs - Math.max(ttft, queue + load));
  return { queue, load, prefill, decode };
}
