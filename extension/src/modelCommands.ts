/** The model actions: Download (progress + Cancel), Load (asks for a TTL), Unload, Delete, Copy endpoint, Info. */

import * as crypto from "crypto";
import * as vscode from "vscode";
import { WorkDoneProgress, WorkDoneProgressBegin, WorkDoneProgressReport } from "vscode-languageclient/node";
import { ModelDeleteRequest, ModelDownloadRequest, ModelInfoRequest, ModelLoadRequest, ModelUnloadRequest } from "./protocol/generated";
import type { Engine } from "./engine";
import { ModelArg, ModelStore, modelIdOf } from "./models";
import { restEndpoint } from "./catalog";
import { formatBytes, parseTtl } from "./format";
import { errorMessage } from "./errors";

async function pickModel(store: ModelStore, arg: ModelArg, filter: (cached: boolean, loaded: boolean) => boolean): Promise<string | undefined> {
  const id = modelIdOf(arg);
  if (id) {
    return id;
  }
  const items = store
    .all()
    .filter((m) => filter(m.cached, m.loaded))
    .map((m) => ({ label: m.alias, description: m.id, detail: `${m.device} · ${m.runtime} · ${formatBytes(m.sizeBytes)}` }));
  const pick = await vscode.window.showQuickPick(items, { placeHolder: vscode.l10n.t("Choose a model") });
  return pick?.description;
}

/** Runs a request that reports LSP work-done progress in a cancellable notification. */
async function withWorkDone<R>(engine: Engine, title: string, run: (token: string, cancel: vscode.CancellationToken) => Promise<R>): Promise<R> {
  return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, async (progress, cancel) => {
    const token = crypto.randomUUID();
    let last = 0;
    const sub = engine.onProgress(WorkDoneProgress.type, token, (value) => {
      if (value.kind === "begin" || value.kind === "report") {
        const v = value as WorkDoneProgressBegin | WorkDoneProgressReport;
        const pct = v.percentage ?? last;
        progress.report({ message: v.message, increment: Math.max(0, pct - last) });
        last = Math.max(last, pct);
      }
    });
    try {
      return await run(token, cancel);
    } finally {
      sub.dispose();
    }
  });
}

/** Options a caller (a keybinding's args, another extension, the tests) may pass instead of being asked. */
export interface ModelCommandOptions {
  /** Load: the TTL in seconds (-1 keeps it loaded). */
  ttl?: number;
  /** Delete: skip the confirmation. */
  confirmed?: boolean;
}

export function registerModelCommands(context: vscode.ExtensionContext, engine: Engine, store: ModelStore): void {
  const register = (id: string, fn: (arg: ModelArg, opts: ModelCommandOptions) => Promise<unknown>): void => {
    context.subscriptions.push(
      vscode.commands.registerCommand(id, async (arg: ModelArg, opts?: ModelCommandOptions) => {
        try {
          return await fn(arg, opts ?? {});
        } catch (err) {
          const message = errorMessage(err);
          if (message !== undefined) {
            void vscode.window.showErrorMessage(message);
          }
          return undefined;
        }
      }),
    );
  };

  register("ingot.model.download", async (arg) => {
    const id = await pickModel(store, arg, (cached) => !cached);
    if (!id) {
      return;
    }
    const info = await withWorkDone(engine, vscode.l10n.t("Downloading {0}", id), (token, cancel) =>
      engine.request(ModelDownloadRequest, { model: id, workDoneToken: token }, cancel),
    );
    await store.refresh();
    void vscode.window.showInformationMessage(vscode.l10n.t("{0} is downloaded.", info.id));
    return info;
  });

  register("ingot.model.load", async (arg, opts) => {
    const id = await pickModel(store, arg, (cached, loaded) => cached && !loaded);
    if (!id) {
      return;
    }
    const defaultTtl = vscode.workspace.getConfiguration("ingot").get<number>("defaultTtl", 600);
    const answer = opts.ttl !== undefined ? String(opts.ttl) : await vscode.window.showInputBox({
      title: vscode.l10n.t("Load {0}", id),
      prompt: vscode.l10n.t("Time to live after the last use: seconds, or 10m, 1h; -1 keeps it loaded"),
      value: String(defaultTtl),
      validateInput: (text) => (parseTtl(text) === undefined ? vscode.l10n.t("Enter seconds, a duration like 10m, or -1") : undefined),
    });
    if (answer === undefined) {
      return;
    }
    const ttl = parseTtl(answer);
    const info = await withWorkDone(engine, vscode.l10n.t("Loading {0}", id), (token, cancel) =>
      engine.request(ModelLoadRequest, { model: id, ttl, workDoneToken: token }, cancel),
    );
    await store.refresh();
    void vscode.window.showInformationMessage(vscode.l10n.t("{0} is loaded.", info.id));
    return info;
  });

  register("ingot.model.unload", async (arg) => {
    const id = await pickModel(store, arg, (_cached, loaded) => loaded);
    if (!id) {
      return;
    }
    const result = await engine.request(ModelUnloadRequest, { model: id });
    await store.refresh();
    void vscode.window.showInformationMessage(
      result.unloaded ? vscode.l10n.t("{0} is unloaded.", id) : vscode.l10n.t("{0} unloads when its running requests finish.", id),
    );
  });

  register("ingot.model.delete", async (arg, opts) => {
    const id = await pickModel(store, arg, (cached) => cached);
    if (!id) {
      return;
    }
    const yes = vscode.l10n.t("Delete");
    const choice = opts.confirmed ? yes : await vscode.window.showWarningMessage(vscode.l10n.t("Delete {0} from the cache?", id), { modal: true }, yes);
    if (choice !== yes) {
      return;
    }
    await engine.request(ModelDeleteRequest, { model: id });
    await store.refresh();
  });

  register("ingot.model.copyEndpoint", async (arg) => {
    const url = engine.restUrl;
    if (!url) {
      void vscode.window.showWarningMessage(vscode.l10n.t("The REST service is not ready yet."));
      return;
    }
    const id = modelIdOf(arg);
    await vscode.env.clipboard.writeText(restEndpoint(url));
    void vscode.window.showInformationMessage(
      id ? vscode.l10n.t("Copied {0} (model \"{1}\").", restEndpoint(url), id) : vscode.l10n.t("Copied {0}.", restEndpoint(url)),
    );
  });

  register("ingot.model.info", async (arg) => {
    const id = await pickModel(store, arg, () => true);
    if (!id) {
      return;
    }
    const m = await engine.request(ModelInfoRequest, { model: id });
    const lines = [
      `# ${m.displayName}`,
      "",
      m.description ?? "",
      "",
      `| | |`,
      `|---|---|`,
      `| id | \`${m.id}\` |`,
      `| alias | \`${m.alias}\` |`,
      `| publisher | ${m.publisher} |`,
      `| device | ${m.device} |`,
      `| runtime | ${m.runtime} |`,
      `| size | ${formatBytes(m.sizeBytes)} |`,
      `| context | ${m.contextLength} |`,
      `| max output | ${m.maxOutputTokens} |`,
      `| task | ${m.task} |`,
      `| source | ${m.source} |`,
      `| fits | ${m.fits ? "yes" : "no"}: ${m.fitReason} |`,
      `| license | ${m.license}${m.licenseUrl ? ` (${m.licenseUrl})` : ""} |`,
    ];
    const doc = await vscode.workspace.openTextDocument({ language: "markdown", content: lines.join("\n") });
    await vscode.window.showTextDocument(doc, { preview: true });
  });
}
