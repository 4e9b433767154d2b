/** The performance webview: live charts (tokens/s, TTFT, CPU, RSS, GPU) and the recent-requests table. */

import type { RequestTelemetry, TelemetrySample } from "../protocol/generated";
import type { FromPerformance, ToPerformance } from "./messages";
import { latencyBreakdown, lineChart } from "./chart";
import { byId, el, strings, vscodeApi } from "./dom";

const S = strings();
const SVG = "http://www.w3.org/2000/svg";
const W = 320;
const H = 96;
const SAMPLES = 120;
const REQUESTS = 40;

const samples: TelemetrySample[] = [];
const requests: RequestTelemetry[] = [];
let names: Record<string, string> = {};
const nameOf = (id: string): string => names[id] ?? id;

interface Chart {
  svg: SVGSVGElement;
  value: HTMLElement;
  figure: HTMLElement;
}

function chart(id: string, title: string): Chart {
  const figure = el("figure", "chart");
  figure.id = id;
  const caption = el("figcaption");
  caption.append(el("span", "title", title));
  const value = el("span", "value", "—");
  value.setAttribute("aria-live", "off");
  caption.append(value);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  figure.append(caption, svg);
  byId("charts").append(figure);
  return { svg, value, figure };
}

function draw(c: Chart, series: { values: (number | null | undefined)[]; cls: string }[], capacity: number, valueText: string, floor = 1, dots = false): void {
  const geo = series.map((s) => ({ s, g: lineChart(s.values, W, H, capacity, floor) }));
  const yMax = Math.max(...geo.map((x) => x.g.yMax));
  const scaled = series.map((s) => ({ s, g: lineChart(s.values.concat(), W, H, capacity, yMax) }));
  c.svg.replaceChildren();
  for (const t of scaled[0]?.g.ticks ?? []) {
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("x1", "0");
    line.setAttribute("x2", String(W));
    line.setAttribute("y1", String(t.y));
    line.setAttribute("y2", String(t.y));
    line.setAttribute("class", "grid");
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", "2");
    label.setAttribute("y", String(t.y + 10));
    label.setAttribute("class", "tick");
    label.textContent = t.value >= 100 ? t.value.toFixed(0) : String(Math.round(t.value * 10) / 10);
    c.svg.append(line, label);
  }
  let points = 0;
  for (const { s, g } of scaled) {
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", g.path);
    path.setAttribute("class", `line ${s.cls}`);
    c.svg.append(path);
    if (dots) {
      for (const p of g.dots) {
        const dot = document.createElementNS(SVG, "circle");
        dot.setAttribute("cx", String(p.x));
        dot.setAttribute("cy", String(p.y));
        dot.setAttribute("r", "2.5");
        dot.setAttribute("class", `dot ${s.cls}`);
        c.svg.append(dot);
      }
    }
    points += g.dots.length;
  }
  c.figure.dataset.points = String(points);
  c.value.textContent = valueText;
  c.svg.setAttribute("aria-label", `${c.svg.getAttribute("aria-label")?.split(":")[0] ?? ""}: ${valueText}`);
}

const tps = chart("chart-tps", S.tps);
const ttft = chart("chart-ttft", S.ttft);
const cpu = chart("chart-cpu", S.cpu);
const rss = chart("chart-rss", S.rss);
const gpu = chart("chart-gpu", S.gpu);
const gpuMem = chart("chart-gpu-mem", S.gpuMem);

const fmt = (v: number | null | undefined, unit: string, digits = 1): string =>
  v === null || v === undefined || !Number.isFinite(v) ? "—" : `${v.toFixed(digits)} ${unit}`;
const mb = (b: number): number => b / (1024 * 1024);

function render(): void {
  const last = samples[samples.length - 1];
  const lastReq = requests[requests.length - 1];
  // Per-request series skip requests without the value (e.g. cancelled before a decode rate).
  const perRequest = (pick: (r: RequestTelemetry) => number | null | undefined): number[] =>
    requests.map(pick).filter((v): v is number => v !== null && v !== undefined && Number.isFinite(v));
  const tpsValues = perRequest((r) => r.decodeTps);
  const ttftValues = perRequest((r) => r.ttftMs);
  const across = (n: number): number => Math.min(REQUESTS, Math.max(10, n));
  draw(tps, [{ values: tpsValues, cls: "s1" }], across(tpsValues.length), fmt(lastReq?.decodeTps, S.tpsUnit), 10, true);
  draw(ttft, [{ values: ttftValues, cls: "s2" }], across(ttftValues.length), fmt(lastReq?.ttftMs, "ms", 0), 10, true);
  draw(
    cpu,
    [
      { values: samples.map((s) => s.cpuPct), cls: "s3" },
      { values: samples.map((s) => s.engineCpuPct), cls: "s1" },
    ],
    SAMPLES,
    last ? `${S.system} ${last.cpuPct.toFixed(0)} % · ${S.engine} ${last.engineCpuPct.toFixed(0)} %` : "—",
    100,
  );
  draw(rss, [{ values: samples.map((s) => mb(s.engineRss)), cls: "s4" }], SAMPLES, last ? fmt(mb(last.engineRss), "MB", 0) : "—", 100);
  const hasGpu = samples.some((s) => s.gpus.length > 0);
  gpu.figure.hidden = !hasGpu;
  gpuMem.figure.hidden = !hasGpu;
  byId("no-gpu").hidden = hasGpu;
  if (hasGpu) {
    draw(gpu, [{ values: samples.map((s) => s.gpus[0]?.utilizationPct), cls: "s2" }], SAMPLES, fmt(last?.gpus[0]?.utilizationPct, "%", 0), 100);
    draw(
      gpuMem,
      [{ values: samples.map((s) => (s.gpus[0] ? mb(s.gpus[0].memoryUsed) : undefined)), cls: "s4" }],
      SAMPLES,
      last?.gpus[0] ? `${mb(last.gpus[0].memoryUsed).toFixed(0)} / ${mb(last.gpus[0].memoryTotal).toFixed(0)} MB` : "—",
      100,
    );
  }
  const loaded = byId("loaded");
  loaded.textContent = last
    ? last.loaded.length
      ? last.loaded.map((l) => `${nameOf(l.id)} (${l.activeRequests} ${S.active}, ${l.queuedRequests} ${S.queued})`).join(", ")
      : S.noneLoaded
    : "";
  renderTable();
}

function renderTable(): void {
  const body = byId<HTMLTableSectionElement>("requests");
  body.replaceChildren();
  for (const r of requests.slice(-20).reverse()) {
    const b = latencyBreakdown(r);
    const row = el("tr");
    const cells = [
      new Date(r.startedAt * 1000).toLocaleTimeString(),
      nameOf(r.modelId),
      r.kind,
      `${b.queue.toFixed(0)}`,
      `${b.load.toFixed(0)}`,
      `${b.prefill.toFixed(0)}`,
      `${b.decode.toFixed(0)}`,
      `${r.totalMs.toFixed(0)}`,
      `${r.promptTokens} / ${r.completionTokens}`,
      r.decodeTps === null || r.decodeTps === undefined ? "—" : r.decodeTps.toFixed(1),
    ];
    cells.forEach((c, i) => {
      const td = el("td", i >= 3 ? "num" : undefined, c);
      row.append(td);
    });
    const bar = el("td", "bar");
    const total = Math.max(1, b.queue + b.load + b.prefill + b.decode);
    for (const [k, v] of Object.entries(b)) {
      const seg = el("span", `seg ${k}`);
      seg.title = `${S[k] ?? k}: ${v.toFixed(0)} ms`;
      seg.dataset.w = String(Math.round((v / total) * 100));
      bar.append(seg);
    }
    row.append(bar);
    body.append(row);
  }
  // Widths via CSSOM (allowed by the CSP, unlike inline style attributes).
  for (const seg of Array.from(body.querySelectorAll<HTMLElement>(".seg"))) {
    seg.style.width = `${seg.dataset.w ?? 0}%`;
  }
  byId("requests-empty").hidden = requests.length > 0;
}

let pending = false;
function schedule(): void {
  if (!pending) {
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      render();
    });
  }
}

window.addEventListener("message", (event: MessageEvent<ToPerformance>) => {
  const msg = event.data;
  if (msg.type === "history") {
    samples.splice(0, samples.length, ...msg.samples.slice(-SAMPLES));
    requests.splice(0, requests.length, ...msg.requests.slice(-REQUESTS));
  } else if (msg.type === "sample") {
    samples.push(msg.sample);
    samples.splice(0, Math.max(0, samples.length - SAMPLES));
  } else if (msg.type === "request") {
    requests.push(msg.request);
    requests.splice(0, Math.max(0, requests.length - REQUESTS));
  } else if (msg.type === "source") {
    byId("source").textContent = msg.text;
    byId("source-line").hidden = msg.text === "";
    return;
  } else if (msg.type === "names") {
    names = msg.names;
  }
  schedule();
});

render();
vscodeApi.postMessage({ type: "ready" } satisfies FromPerformance);
