/** The status bar item: engine state, loaded model, last tokens/s; tooltip with the REST URL; click opens the performance view. */

import * as vscode from "vscode";
import type { Engine, EngineState } from "./engine";
import type { ModelStore } from "./models";
import { formatTps } from "./format";

export class StatusBar implements vscode.Disposable {
  readonly item: vscode.StatusBarItem;
  private lastTps: number | undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly engine: Engine,
    private readonly store: ModelStore,
  ) {
    this.item = vscode.window.createStatusBarItem("ingot.status", vscode.StatusBarAlignment.Right, 100);
    this.item.name = vscode.l10n.t("Ingot");
    this.item.command = "ingot.performance.open";
    this.disposables.push(
      engine.onDidChangeState(() => this.update()),
      engine.onServiceReady(() => this.update()),
      store.onDidChange(() => this.update()),
      engine.onTelemetryRequest((r) => {
        if (r.decodeTps !== undefined && r.decodeTps !== null) {
          this.lastTps = r.decodeTps;
          this.update();
        }
      }),
    );
    this.update();
    this.item.show();
  }

  /** The text shown, for tests. */
  get text(): string {
    return this.item.text;
  }

  private stateLabel(state: EngineState): string {
    switch (state) {
      case "starting":
        return vscode.l10n.t("starting");
      case "running":
        return vscode.l10n.t("running");
      case "restarting":
        return vscode.l10n.t("restarting");
      case "failed":
        return vscode.l10n.t("failed");
      default:
        return vscode.l10n.t("stopped");
    }
  }

  update(): void {
    const state = this.engine.state;
    const icon = state === "running" ? "$(circuit-board)" : state === "failed" ? "$(error)" : state === "stopped" ? "$(circle-slash)" : "$(loading~spin)";
    const loaded = this.store.loaded().map((m) => m.alias);
    const parts = [`${icon} Ingot`];
    if (state !== "running") {
      parts.push(this.stateLabel(state));
    } else {
      parts.push(loaded.length ? loaded.join(", ") : vscode.l10n.t("no model loaded"));
      if (this.lastTps !== undefined) {
        parts.push(formatTps(this.lastTps));
      }
    }
    this.item.text = parts.join(" · ");
    const md = new vscode.MarkdownString(undefined, true);
    md.appendMarkdown(`**Ingot** — ${this.stateLabel(state)}\n\n`);
    if (this.engine.restUrl) {
      md.appendMarkdown(`${vscode.l10n.t("REST (OpenAI-compatible)")}: \`${this.engine.restUrl}/v1\`\n\n`);
    }
    md.appendMarkdown(`${vscode.l10n.t("Loaded")}: ${loaded.length ? loaded.join(", ") : vscode.l10n.t("none")}\n\n`);
    if (this.lastTps !== undefined) {
      md.appendMarkdown(`${vscode.l10n.t("Last answer")}: ${formatTps(this.lastTps)}\n\n`);
    }
    md.appendMarkdown(vscode.l10n.t("Click to open the performance view."));
    this.item.tooltip = md;
    this.item.accessibilityInformation = { label: this.item.text.replace(/\$\([^)]*\)\s*/g, "") };
    this.item.backgroundColor = state === "failed" ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  dispose(): void {
    for (const d of this.disposables) {
      d.dispose();
    }
    this.item.dispose();
  }
}
