/** The model store (catalog state from the engine) and the Models and Loaded tree views. */

import * as vscode from "vscode";
import { CatalogListRequest, ModelInfo } from "./protocol/generated";
import type { Engine } from "./engine";
import { contextValue, fitBadge, groupCatalog, labelOf, loadedNames, modelDescription, modelLabel } from "./catalog";
import { isRemote, remoteDescription, shownDevice, shownRuntime, withRemoteContext } from "./remotes";
import { formatBytes, formatTtl, ttlRemaining } from "./format";

export class ModelStore implements vscode.Disposable {
  private models: ModelInfo[] = [];
  private fetchedAt = 0;
  private ttlOverride = new Map<string, { seconds: number; at: number }>();
  private readonly emitter = new vscode.EventEmitter<void>();
  readonly onDidChange = this.emitter.event;
  private refreshTimer: NodeJS.Timeout | undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly engine: Engine) {
    this.disposables.push(
      engine.onDidChangeState((s) => {
        if (s === "running") {
          void this.refresh();
        } else {
          this.models = [];
          this.emitter.fire();
        }
      }),
      engine.onModelStateChanged(() => this.refreshSoon()),
      engine.onTelemetrySample((sample) => {
        const now = Date.now();
        for (const l of sample.loaded) {
          if (l.ttlRemainingS !== undefined && l.ttlRemainingS !== null) {
            this.ttlOverride.set(l.id, { seconds: l.ttlRemainingS, at: now });
          } else {
            this.ttlOverride.delete(l.id);
          }
        }
      }),
    );
  }

  all(): ModelInfo[] {
    return this.models;
  }

  loaded(): ModelInfo[] {
    return this.models.filter((m) => m.loaded);
  }

  loadedNames(): string[] {
    return loadedNames(this.models);
  }

  find(id: string): ModelInfo | undefined {
    return this.models.find((m) => m.id === id);
  }

  /** The one name the views, the status bar, notifications and pickers give a model (see modelLabel). */
  label(model: ModelInfo | string): string {
    return typeof model === "string" ? labelOf(model, this.models) : modelLabel(model, this.models);
  }

  /** Seconds until the TTL unloads a loaded model, counted down locally; undefined while in use or kept. */
  ttlLeft(model: ModelInfo): number | undefined {
    const override = this.ttlOverride.get(model.id);
    if (override) {
      return ttlRemaining(override.seconds, override.at, Date.now());
    }
    if (model.expiresInSeconds === undefined || model.expiresInSeconds === null) {
      return model.ttlSeconds !== undefined && model.ttlSeconds !== null && model.ttlSeconds < 0 ? -1 : undefined;
    }
    return ttlRemaining(model.expiresInSeconds, this.fetchedAt, Date.now());
  }

  refreshSoon(): void {
    if (this.refreshTimer) {
      clearTimeout(this.refreshTimer);
    }
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      void this.refresh();
    }, 200);
  }

  async refresh(): Promise<void> {
    if (this.engine.state !== "running") {
      return;
    }
    try {
      const result = await this.engine.request(CatalogListRequest, {});
      this.models = result.models;
      this.fetchedAt = Date.now();
      this.ttlOverride.clear();
      this.emitter.fire();
    } catch (err) {
      this.engine.output.appendLine(`[ingot] catalog/list failed: ${String(err)}`);
    }
  }

  dispose(): void {
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}

type ModelsNode = { kind: "group"; group: "downloaded" | "available"; models: ModelInfo[] } | { kind: "model"; model: ModelInfo };

/** Tree item arguments of the model commands: the node, or a model id from the palette. */
export type ModelArg = { kind: "model"; model: ModelInfo } | ModelInfo | string | undefined;

export function modelIdOf(arg: ModelArg): string | undefined {
  if (arg === undefined) {
    return undefined;
  }
  if (typeof arg === "string") {
    return arg;
  }
  if ("kind" in arg && arg.kind === "model") {
    return arg.model.id;
  }
  return (arg as ModelInfo).id;
}

function modelTooltip(model: ModelInfo): vscode.MarkdownString {
  const fit = fitBadge(model);
  const md = new vscode.MarkdownString();
  md.appendMarkdown(`**${model.displayName}** \`${model.id}\`\n\n`);
  if (model.description) {
    md.appendText(`${model.description}\n\n`);
  }
  md.appendMarkdown(
    `${vscode.l10n.t("Device")}: ${shownDevice(model)} · ${vscode.l10n.t("Runtime")}: ${shownRuntime(model)} · ${vscode.l10n.t("Size")}: ${formatBytes(model.sizeBytes)}\n\n`,
  );
  md.appendMarkdown(`${vscode.l10n.t("Context")}: ${model.contextLength} · ${vscode.l10n.t("License")}: ${model.license}\n\n`);
  md.appendText(`${fit.fits ? "✓" : "✗"} ${fit.text}`);
  return md;
}

export class ModelsTree implements vscode.TreeDataProvider<ModelsNode> {
  private readonly emitter = new vscode.EventEmitter<void>();
  readonly onDidChangeTreeData = this.emitter.event;

  constructor(private readonly store: ModelStore) {
    store.onDidChange(() => this.emitter.fire());
  }

  getChildren(node?: ModelsNode): ModelsNode[] {
    if (!node) {
      if (this.store.all().length === 0) {
        return [];
      }
      const groups = groupCatalog(this.store.all());
      return [
        { kind: "group", group: "downloaded", models: groups.downloaded },
        { kind: "group", group: "available", models: groups.available },
      ];
    }
    if (node.kind === "group") {
      return node.models.map((model) => ({ kind: "model", model }));
    }
    return [];
  }

  getTreeItem(node: ModelsNode): vscode.TreeItem {
    if (node.kind === "group") {
      const label = node.group === "downloaded" ? vscode.l10n.t("Downloaded ({0})", node.models.length) : vscode.l10n.t("Available ({0})", node.models.length);
      const item = new vscode.TreeItem(label, vscode.TreeItemCollapsibleState.Expanded);
      item.id = `group:${node.group}`;
      item.contextValue = `group-${node.group}`;
      return item;
    }
    const m = node.model;
    const fit = fitBadge(m);
    const item = new vscode.TreeItem(this.store.label(m), vscode.TreeItemCollapsibleState.None);
    item.id = `model:${m.id}`;
    const state = m.loaded ? vscode.l10n.t("loaded") : "";
    const badge = fit.fits ? vscode.l10n.t("fits") : vscode.l10n.t("does not fit: {0}", fit.text);
    item.description = [isRemote(m) ? remoteDescription(m) : modelDescription(m), badge, state].filter(Boolean).join(" · ");
    item.tooltip = modelTooltip(m);
    item.contextValue = withRemoteContext(contextValue(m), m);
    item.iconPath = new vscode.ThemeIcon(
      m.loaded ? "circle-filled" : isRemote(m) ? "remote" : m.cached ? "check" : fit.fits ? "cloud" : "warning",
      m.loaded ? new vscode.ThemeColor("charts.green") : fit.fits ? undefined : new vscode.ThemeColor("problemsWarningIcon.foreground"),
    );
    item.accessibilityInformation = { label: `${m.displayName}, ${item.description}` };
    return item;
  }
}

type LoadedNode = { kind: "model"; model: ModelInfo };

export class LoadedTree implements vscode.TreeDataProvider<LoadedNode>, vscode.Disposable {
  private readonly emitter = new vscode.EventEmitter<void>();
  readonly onDidChangeTreeData = this.emitter.event;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly store: ModelStore) {
    store.onDidChange(() => this.emitter.fire());
    // The TTL counts down every second while something is loaded.
    this.timer = setInterval(() => {
      if (this.store.loaded().length > 0) {
        this.emitter.fire();
      }
    }, 1000);
  }

  getChildren(node?: LoadedNode): LoadedNode[] {
    return node ? [] : this.store.loaded().map((model) => ({ kind: "model", model }));
  }

  getTreeItem(node: LoadedNode): vscode.TreeItem {
    const m = node.model;
    const item = new vscode.TreeItem(this.store.label(m), vscode.TreeItemCollapsibleState.None);
    item.id = `loaded:${m.id}`;
    const left = this.store.ttlLeft(m);
    const ttl = left === undefined ? vscode.l10n.t("in use") : left < 0 ? vscode.l10n.t("kept") : formatTtl(left);
    item.description = `${vscode.l10n.t("TTL")} ${ttl} · ${formatBytes(m.memoryBytes)} · ${shownDevice(m)}`;
    item.tooltip = modelTooltip(m);
    item.contextValue = "model downloaded loaded";
    item.iconPath = new vscode.ThemeIcon("pulse");
    item.accessibilityInformation = { label: `${m.displayName}, ${item.description}` };
    return item;
  }

  dispose(): void {
    clearInterval(this.timer);
  }
}
