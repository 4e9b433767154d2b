/** The status bar item: engine state, loaded model, the last answer's tokens/s while its model is loaded; tooltip with
 * the REST URL. A click opens the performance view while the engine runs, the log while it starts, and the fix when it
 * has failed or stopped. Also the "engine is not running" message that commands needing the engine show. */

import * as vscode from "vscode";
import type { Engine, EngineState } from "./engine";
import type { ModelStore } from "./models";
import { formatTps, statusView } from "./format";

/** An internal command (not contributed): the status bar item's click when the engine is not running. */
const FIX_COMMAND = "ingot.status.fix";

/** Tell the user the engine is not running and offer the fix: set Ingot up, show the log, restart. */
export async function offerEngineFix(engine: Engine): Promise<void> {
  const t = vscode.l10n.t;
  const log = t("Show Log");
  const setup = t("Set up Ingot");
  const restart = t("Restart Engine");
  let choice: string | undefined;
  if (engine.state === "running") {
    return;
  } else if (engine.state === "starting" || engine.state === "restarting") {
    choice = await vscode.window.showInformationMessage(t("The Ingot engine is starting. Try again in a moment."), log);
  } else {
    if (engine.missing) {
      choice = await vscode.window.showErrorMessage(t("Ingot's engine is not set up yet. Set up Ingot installs it into a private environment (once; a few minutes)."), setup, log);
    } else if (engine.state === "failed") {
      choice = await vscode.window.showErrorMessage(t("The Ingot engine is not running: it failed. The log says why."), restart, log);
    } else {
      choice = await vscode.window.showWarningMessage(t("The Ingot engine is stopped."), restart, log);
    }
  }
  if (choice === log) {
    engine.output.show(true);
  } else if (choice === restart) {
    await engine.restart();
  } else if (choice === setup) {
    await vscode.commands.executeCommand("ingot.setup");
  }
}

/** True when the engine runs; otherwise shows what to do about it (for commands that need the engine). */
export function requireEngine(engine: Engine): boolean {
  if (engine.state === "running") {
    return true;
  }
  void offerEngineFix(engine);
  return false;
}

export class StatusBar implements vscode.Disposable {
  readonly item: vscode.StatusBarItem;
  private last: { modelId: string; tps: number } | undefined;
  private loadedIds = new Set<string>();
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly engine: Engine,
    private readonly store: ModelStore,
  ) {
    this.item = vscode.window.createStatusBarItem("ingot.status", vscode.StatusBarAlignment.Right, 100);
    this.item.name = vscode.l10n.t("Ingot");
    this.disposables.push(
      vscode.commands.registerCommand(FIX_COMMAND, () => offerEngineFix(engine)),
      engine.onDidChangeState((state) => {
        if (state !== "running") {
          this.last = undefined;
        }
        this.update();
      }),
      engine.onServiceReady(() => this.update()),
      store.onDidChange(() => {
        // A model that was unloaded takes its tok/s with it (a later load starts without one).
        const now = new Set(store.loaded().map((m) => m.id));
        if (this.last && this.loadedIds.has(this.last.modelId) && !now.has(this.last.modelId)) {
          this.last = undefined;
        }
        this.loadedIds = now;
        this.update();
      }),
      engine.onTelemetryRequest((r) => {
        if (r.decodeTps !== undefined && r.decodeTps !== null) {
          this.last = { modelId: r.modelId, tps: r.decodeTps };
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
    const loaded = state === "running" ? this.store.loaded().map((m) => ({ id: m.id, label: this.store.label(m) })) : [];
    const view = statusView(state, loaded, this.last, this.engine.setupState);
    const parts = [`${view.icon} Ingot`];
    if (view.models === undefined) {
      parts.push(view.label === "settingUp" ? vscode.l10n.t("setting up") : view.label === "notSetUp" ? vscode.l10n.t("not set up") : this.stateLabel(state));
    } else {
      parts.push(view.models.length ? view.models.join(", ") : vscode.l10n.t("no model loaded"));
      if (view.tps !== undefined) {
        parts.push(formatTps(view.tps));
      }
    }
    this.item.text = parts.join(" · ");
    const md = new vscode.MarkdownString(undefined, true);
    md.appendMarkdown(`**Ingot** — ${this.stateLabel(state)}\n\n`);
    if (this.engine.restUrl && state === "running") {
      md.appendMarkdown(`${vscode.l10n.t("REST (OpenAI-compatible)")}: \`${this.engine.restUrl}/v1\`\n\n`);
    }
    if (view.models !== undefined) {
      md.appendMarkdown(`${vscode.l10n.t("Loaded")}: ${view.models.length ? view.models.join(", ") : vscode.l10n.t("none")}\n\n`);
    }
    if (view.tps !== undefined) {
      md.appendMarkdown(`${vscode.l10n.t("Last answer")}: ${formatTps(view.tps)}\n\n`);
    }
    if (view.action === "performance") {
      this.item.command = "ingot.performance.open";
      md.appendMarkdown(vscode.l10n.t("Click to open the performance view."));
    } else if (view.action === "log") {
      this.item.command = "ingot.engine.showLog";
      md.appendMarkdown(vscode.l10n.t("Click to show the engine log."));
    } else {
      this.item.command = { command: FIX_COMMAND, title: vscode.l10n.t("Fix the Ingot engine") };
      md.appendMarkdown(vscode.l10n.t("Click to see how to fix it."));
    }
    this.item.tooltip = md;
    this.item.accessibilityInformation = { label: this.item.text.replace(/\$\([^)]*\)\s*/g, "") };
    this.item.backgroundColor = view.error ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  dispose(): void {
    for (const d of this.disposables) {
      d.dispose();
    }
    this.item.dispose();
  }
}
