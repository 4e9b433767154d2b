/** The model actions: Download (progress + Cancel), Load (asks for a TTL), Unload, Delete, Copy endpoint, Info. */

import * as crypto from "crypto";
import * as vscode from "vscode";
import { WorkDoneProgress, WorkDoneProgressBegin, WorkDoneProgressReport } from "vscode-languageclient/node";
import {
  ModelDeleteRequest,
  ModelDownloadRequest,
  ModelInfo,
  ModelInfoRequest,
  ModelLoadRequest,
  ModelUnloadRequest,
  RemoteAttachRequest,
  RemoteDetachRequest,
  RemoteListRequest,
} from "./protocol/generated";
import type { Engine } from "./engine";
import { ModelArg, ModelStore, modelIdOf } from "./models";
import { requireEngine } from "./statusBar";
import { isEmbedding, restEndpoint } from "./catalog";
import { formatBytes, parseTtl } from "./format";
import { nameOk, remoteUrl, shownDevice, shownRuntime, urlProblem } from "./remotes";
import { errorMessage } from "./errors";

/** What a picker says instead of opening empty, and the command that helps (e.g. Download Model). */
interface EmptyPick {
  message: string;
  action?: { title: string; command: string };
}

/** The model a command acts on: its argument, or the user's pick. Undefined (after saying why) when the engine is not
 * running or there is nothing to pick. */
async function pickModel(
  engine: Engine,
  store: ModelStore,
  arg: ModelArg,
  filter: (cached: boolean, loaded: boolean) => boolean,
  empty: () => EmptyPick,
): Promise<string | undefined> {
  if (!requireEngine(engine)) {
    return undefined;
  }
  const id = modelIdOf(arg);
  if (id) {
    return id;
  }
  if (store.all().length === 0) {
    await store.refresh();
  }
  const items = store
    .all()
    .filter((m) => filter(m.cached, m.loaded))
    .map((m) => ({ label: store.label(m), description: `${shownDevice(m)} · ${shownRuntime(m)} · ${formatBytes(m.sizeBytes)}`, detail: m.displayName, id: m.id }));
  if (items.length === 0) {
    const { message, action } = empty();
    const choice = await vscode.window.showInformationMessage(message, ...(action ? [action.title] : []));
    if (action && choice === action.title) {
      await vscode.commands.executeCommand(action.command);
    }
    return undefined;
  }
  const pick = await vscode.window.showQuickPick(items, { placeHolder: vscode.l10n.t("Choose a model"), matchOnDescription: true, matchOnDetail: true });
  return pick?.id;
}

/** Model Info pages: read-only virtual Markdown documents, shown in the Markdown preview. */
class ModelInfoPages implements vscode.TextDocumentContentProvider {
  static readonly scheme = "ingot-model";
  private readonly pages = new Map<string, string>();
  private readonly emitter = new vscode.EventEmitter<vscode.Uri>();
  readonly onDidChange = this.emitter.event;

  set(uri: vscode.Uri, text: string): void {
    this.pages.set(uri.toString(), text);
    this.emitter.fire(uri);
  }

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.pages.get(uri.toString()) ?? "";
  }
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
  /** Delete, Detach: skip the confirmation. */
  confirmed?: boolean;
  /** Attach Remote vLLM: the URL, key and name instead of asking (an empty key: none). */
  url?: string;
  apiKey?: string;
  name?: string;
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

  const downloadFirst = (): EmptyPick => ({
    message: vscode.l10n.t("No model is downloaded yet: download one first."),
    action: { title: vscode.l10n.t("Download Model"), command: "ingot.model.download" },
  });

  register("ingot.model.download", async (arg) => {
    const id = await pickModel(engine, store, arg, (cached) => !cached, () => ({ message: vscode.l10n.t("Every model in the catalog is downloaded already.") }));
    if (!id) {
      return;
    }
    const info = await withWorkDone(engine, vscode.l10n.t("Downloading {0}", store.label(id)), (token, cancel) =>
      engine.request(ModelDownloadRequest, { model: id, workDoneToken: token }, cancel),
    );
    await store.refresh();
    void vscode.window.showInformationMessage(vscode.l10n.t("{0} is downloaded.", store.label(info.id)));
    return info;
  });

  register("ingot.model.load", async (arg, opts) => {
    const id = await pickModel(engine, store, arg, (cached, loaded) => cached && !loaded, () =>
      store.all().some((m) => m.cached) ? { message: vscode.l10n.t("Every downloaded model is loaded already.") } : downloadFirst(),
    );
    if (!id) {
      return;
    }
    const name = store.label(id);
    const defaultTtl = vscode.workspace.getConfiguration("ingot").get<number>("defaultTtl", 600);
    const answer = opts.ttl !== undefined ? String(opts.ttl) : await vscode.window.showInputBox({
      title: vscode.l10n.t("Load {0}", name),
      prompt: vscode.l10n.t("Time to live after the last use: seconds, or 10m, 1h; -1 keeps it loaded"),
      value: String(defaultTtl),
      validateInput: (text) => (parseTtl(text) === undefined ? vscode.l10n.t("Enter seconds, a duration like 10m, or -1") : undefined),
    });
    if (answer === undefined) {
      return;
    }
    const ttl = parseTtl(answer);
    const info = await withWorkDone(engine, vscode.l10n.t("Loading {0}", name), (token, cancel) =>
      engine.request(ModelLoadRequest, { model: id, ttl, workDoneToken: token }, cancel),
    );
    await store.refresh();
    void vscode.window.showInformationMessage(vscode.l10n.t("{0} is loaded.", store.label(info.id)));
    return info;
  });

  register("ingot.model.unload", async (arg) => {
    const id = await pickModel(engine, store, arg, (_cached, loaded) => loaded, () => ({ message: vscode.l10n.t("No model is loaded.") }));
    if (!id) {
      return;
    }
    const name = store.label(id);
    const result = await engine.request(ModelUnloadRequest, { model: id });
    await store.refresh();
    void vscode.window.showInformationMessage(
      result.unloaded ? vscode.l10n.t("{0} is unloaded.", name) : vscode.l10n.t("{0} unloads when its running requests finish.", name),
    );
  });

  register("ingot.model.delete", async (arg, opts) => {
    const id = await pickModel(engine, store, arg, (cached) => cached, () => ({ message: vscode.l10n.t("No model is downloaded.") }));
    if (!id) {
      return;
    }
    const yes = vscode.l10n.t("Delete");
    const choice = opts.confirmed ? yes : await vscode.window.showWarningMessage(vscode.l10n.t("Delete {0} from the cache?", store.label(id)), { modal: true }, yes);
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
    const model = id ? store.find(id) : undefined;
    const endpoint = restEndpoint(url, model !== undefined && isEmbedding(model));
    await vscode.env.clipboard.writeText(endpoint);
    void vscode.window.showInformationMessage(
      id ? vscode.l10n.t("Copied {0} (model \"{1}\").", endpoint, store.label(id)) : vscode.l10n.t("Copied {0}.", endpoint),
    );
  });

  register("ingot.remote.attach", async (_arg, opts) => {
    if (!requireEngine(engine)) {
      return;
    }
    const url =
      opts.url ??
      (await vscode.window.showInputBox({
        title: vscode.l10n.t("Attach Remote vLLM"),
        prompt: vscode.l10n.t("The vLLM server's base URL"),
        placeHolder: "http://gpu-node:8000",
        ignoreFocusOut: true,
        validateInput: (text) => {
          const problem = urlProblem(text);
          return problem === undefined ? undefined : vscode.l10n.t("Enter an http:// or https:// URL");
        },
      }));
    if (url === undefined) {
      return;
    }
    const apiKey =
      opts.apiKey ??
      (await vscode.window.showInputBox({
        title: vscode.l10n.t("Attach Remote vLLM"),
        prompt: vscode.l10n.t("Its API key (vLLM's --api-key); leave empty if it has none. Ingot keeps it in a private file of its home."),
        password: true,
        ignoreFocusOut: true,
      }));
    if (apiKey === undefined) {
      return;
    }
    const name =
      opts.name ??
      (await vscode.window.showInputBox({
        title: vscode.l10n.t("Attach Remote vLLM"),
        prompt: vscode.l10n.t("A name for it (optional): letters, digits, '.', '_' or '-'"),
        ignoreFocusOut: true,
        validateInput: (text) => (nameOk(text) ? undefined : vscode.l10n.t("Use letters, digits, '.', '_' or '-', starting with a letter or digit")),
      }));
    if (name === undefined) {
      return;
    }
    const info = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: vscode.l10n.t("Attaching {0}", url.trim()) }, () =>
      engine.request(RemoteAttachRequest, { url: url.trim(), apiKey: apiKey || undefined, name: name.trim() || undefined }),
    );
    await store.refresh();
    void vscode.window.showInformationMessage(vscode.l10n.t("Attached {0}: {1}.", info.name, info.models.map((m) => m.name).join(", ")));
    return info;
  });

  register("ingot.remote.detach", async (arg, opts) => {
    if (!requireEngine(engine)) {
      return;
    }
    const id = modelIdOf(arg);
    const model = id ? store.find(id) : undefined;
    let remote = model ? remoteUrl(model) : id;
    if (!remote) {
      const { remotes } = await engine.request(RemoteListRequest);
      if (remotes.length === 0) {
        void vscode.window.showInformationMessage(vscode.l10n.t("No remote vLLM is attached."));
        return;
      }
      const pick = await vscode.window.showQuickPick(
        remotes.map((r) => ({ label: r.name, description: r.url, detail: r.models.map((m) => m.name).join(", "), remote: r.name })),
        { placeHolder: vscode.l10n.t("Choose a remote vLLM to detach") },
      );
      remote = pick?.remote;
    }
    if (!remote) {
      return;
    }
    const yes = vscode.l10n.t("Detach");
    const choice = opts.confirmed
      ? yes
      : await vscode.window.showWarningMessage(vscode.l10n.t("Detach {0}? Its models leave the list; nothing stops on the server.", remote), { modal: true }, yes);
    if (choice !== yes) {
      return;
    }
    const info = await engine.request(RemoteDetachRequest, { remote });
    await store.refresh();
    void vscode.window.showInformationMessage(vscode.l10n.t("Detached {0}.", info.name));
    return info;
  });

  const pages = new ModelInfoPages();
  context.subscriptions.push(vscode.workspace.registerTextDocumentContentProvider(ModelInfoPages.scheme, pages));

  register("ingot.model.info", async (arg) => {
    const id = await pickModel(engine, store, arg, () => true, () => ({ message: vscode.l10n.t("The model catalog is empty.") }));
    if (!id) {
      return;
    }
    const m = await engine.request(ModelInfoRequest, { model: id });
    const uri = vscode.Uri.from({ scheme: ModelInfoPages.scheme, path: `/${store.label(m).replace(/[^\w.-]+/g, "-")}.md` });
    pages.set(uri, modelInfoMarkdown(m));
    try {
      await vscode.commands.executeCommand("markdown.showPreview", uri);
    } catch {
      // No Markdown preview (the built-in extension disabled): the read-only document itself.
      await vscode.window.showTextDocument(await vscode.workspace.openTextDocument(uri), { preview: true });
    }
    return uri;
  });
}

function modelInfoMarkdown(m: ModelInfo): string {
  return [
    `# ${m.displayName}`,
    "",
    m.description ?? "",
    "",
    `| | |`,
    `|---|---|`,
    `| id | \`${m.id}\` |`,
    `| alias | \`${m.alias}\` |`,
    `| publisher | ${m.publisher} |`,
    `| device | ${shownDevice(m)} |`,
    `| runtime | ${shownRuntime(m)} |`,
    `| size | ${formatBytes(m.sizeBytes)} |`,
    `| context | ${m.contextLength} |`,
    `| max output | ${m.maxOutputTokens} |`,
    `| task | ${m.task} |`,
    `| source | ${m.source} |`,
    `| fits | ${m.fits ? "yes" : "no"}: ${m.fitReason} |`,
    `| license | ${m.license}${m.licenseUrl ? ` (${m.licenseUrl})` : ""} |`,
    "",
  ].join("\n");
}
