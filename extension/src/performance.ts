/** The performance view: a webview fed by ingot/telemetry/* (history once, then live samples and requests). It says
 * which process it shows: this window's engine, or the engine that owns the Ingot home when this one forwards to it. */

import * as vscode from "vscode";
import { ServiceReady, TelemetryHistoryRequest } from "./protocol/generated";
import type { Engine } from "./engine";
import { webviewHtml } from "./webviewHtml";
import { escapeHtml } from "./markdown";
import type { ToPerformance } from "./webview/messages";

export class PerformancePanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  private ready = false;
  private service: ServiceReady | undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly engine: Engine,
  ) {
    this.disposables.push(
      engine.onTelemetrySample((sample) => this.post({ type: "sample", sample })),
      engine.onTelemetryRequest((request) => this.post({ type: "request", request })),
      engine.onDidChangeState((s) => {
        if (s === "running" && this.panel) {
          void this.sendHistory();
        }
        if (s !== "running") {
          this.service = undefined;
          this.postSource();
        }
      }),
      engine.onServiceReady((ready) => {
        this.service = ready;
        this.postSource();
        // A forwarding engine that took the home over shows its own data from now on.
        void this.sendHistory();
      }),
    );
    if (engine.models) {
      this.disposables.push(engine.models.onDidChange(() => this.postNames()));
    }
  }

  /** Which process the charts show, in words. */
  private sourceText(): string {
    const s = this.service;
    if (!s) {
      return "";
    }
    return s.mode === "forwarding"
      ? vscode.l10n.t("the engine that owns this Ingot home, at {0} (shared with other windows)", s.url)
      : vscode.l10n.t("this window's engine (process {0})", s.pid);
  }

  private postSource(): void {
    this.post({ type: "source", text: this.sourceText() });
  }

  /** The labels the views give models (the requests table and the loaded list use them). */
  private postNames(): void {
    const store = this.engine.models;
    if (store) {
      this.post({ type: "names", names: Object.fromEntries(store.all().map((m) => [m.id, store.label(m)])) });
    }
  }

  get isOpen(): boolean {
    return this.panel !== undefined;
  }

  show(): void {
    if (this.panel) {
      this.panel.reveal();
      return;
    }
    const panel = vscode.window.createWebviewPanel("ingot.performance", vscode.l10n.t("Ingot Performance"), vscode.ViewColumn.Active, {
      enableScripts: true,
      retainContextWhenHidden: true,
      localResourceRoots: [vscode.Uri.joinPath(this.extensionUri, "dist", "webview"), vscode.Uri.joinPath(this.extensionUri, "media")],
    });
    panel.iconPath = vscode.Uri.joinPath(this.extensionUri, "media", "ingot.svg");
    this.panel = panel;
    this.ready = false;
    panel.webview.html = webviewHtml(panel.webview, this.extensionUri, {
      title: panel.title,
      script: "performance.js",
      body: performanceBody(),
      strings: performanceStrings(),
    });
    panel.webview.onDidReceiveMessage((msg: unknown) => {
      if (typeof msg === "object" && msg !== null && (msg as { type?: unknown }).type === "ready") {
        this.ready = true;
        this.postSource();
        this.postNames();
        void this.sendHistory();
      }
    });
    panel.onDidDispose(() => {
      this.panel = undefined;
      this.ready = false;
    });
  }

  private async sendHistory(): Promise<void> {
    if (this.engine.state !== "running") {
      return;
    }
    try {
      const h = await this.engine.request(TelemetryHistoryRequest);
      this.post({ type: "history", samples: h.samples, requests: h.requests });
    } catch (err) {
      this.engine.output.appendLine(`[ingot] telemetry/history failed: ${String(err)}`);
    }
  }

  private post(msg: ToPerformance): void {
    if (this.panel && this.ready) {
      void this.panel.webview.postMessage(msg);
    }
  }

  dispose(): void {
    this.panel?.dispose();
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}

function performanceStrings(): Record<string, string> {
  const t = vscode.l10n.t;
  return {
    tps: t("Decode speed per request (tokens/s)"),
    tpsUnit: t("tok/s"),
    ttft: t("Time to first token per request (ms)"),
    cpu: t("CPU (%)"),
    rss: t("Engine memory (RSS, MB)"),
    gpu: t("GPU utilisation (%)"),
    gpuMem: t("GPU memory (MB)"),
    system: t("system"),
    engine: t("engine"),
    active: t("running"),
    queued: t("queued"),
    noneLoaded: t("No model is loaded."),
    queue: t("queue"),
    load: t("load"),
    prefill: t("prefill"),
    decode: t("decode"),
  };
}

function performanceBody(): string {
  const t = (text: string): string => escapeHtml(vscode.l10n.t(text));
  return `
<main class="performance">
  <header class="row">
    <h1>${t("Performance")}</h1>
    <span class="meta"><span>${t("Loaded")}:</span> <span id="loaded" role="status"></span></span>
  </header>
  <p id="source-line" class="meta" hidden><span>${t("Showing")}:</span> <span id="source"></span></p>
  <section id="charts" class="charts" aria-label="${t("Live charts")}"></section>
  <p id="no-gpu" class="meta">${t("No GPU found: GPU charts are hidden.")}</p>
  <section aria-labelledby="requests-title">
    <h2 id="requests-title">${t("Recent requests")}</h2>
    <p class="legend meta" aria-hidden="true">
      <span class="seg queue"></span> ${t("queue")} <span class="seg load"></span> ${t("load")}
      <span class="seg prefill"></span> ${t("prefill")} <span class="seg decode"></span> ${t("decode")}
    </p>
    <div class="table-scroll">
    <table>
      <caption class="sr-only">${t("Recent requests with their latency in milliseconds")}</caption>
      <thead><tr>
        <th scope="col">${t("Time")}</th><th scope="col">${t("Model")}</th><th scope="col">${t("Kind")}</th>
        <th scope="col" class="num">${t("Queue ms")}</th><th scope="col" class="num">${t("Load ms")}</th>
        <th scope="col" class="num">${t("Prefill ms")}</th><th scope="col" class="num">${t("Decode ms")}</th>
        <th scope="col" class="num">${t("Total ms")}</th><th scope="col" class="num">${t("Tokens in / out")}</th>
        <th scope="col" class="num">${t("tok/s")}</th><th scope="col">${t("Breakdown")}</th>
      </tr></thead>
      <tbody id="requests"></tbody>
    </table>
    </div>
    <p id="requests-empty" class="meta">${t("No requests yet: chat in a playground to see measurements.")}</p>
  </section>
</main>`;
}
