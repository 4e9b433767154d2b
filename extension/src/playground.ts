/** Playground panels: the interactive console (ingot/console/*) in a webview; several can be open side by side. */

import * as crypto from "crypto";
import * as vscode from "vscode";
import { isEmbedding } from "./catalog";
import {
  ConsoleCloseRequest,
  ConsoleOpenRequest,
  ConsoleSendPartialResult,
  ConsoleSendRequest,
  ConsoleSession,
} from "./protocol/generated";
import type { Engine } from "./engine";
import type { ModelStore } from "./models";
import { escapeHtml, renderMarkdown } from "./markdown";
import { webviewHtml } from "./webviewHtml";
import { offerEngineFix } from "./statusBar";
import { errorMessage, isCancellation } from "./errors";
import { FromPlayground, ModelChoice, PlaygroundSettings, ToPlayground, isFromPlayground, sameSession, sanitizeSettings } from "./webview/messages";

export class PlaygroundManager implements vscode.Disposable {
  private readonly panels = new Set<Playground>();
  private counter = 0;

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly engine: Engine,
    private readonly store: ModelStore,
  ) {
    store.onDidChange(() => {
      for (const p of this.panels) {
        p.postModels();
      }
    });
  }

  get count(): number {
    return this.panels.size;
  }

  /** Open a new playground (beside the others when one is open already). */
  open(opts: { model?: string; prefill?: string } = {}): Playground {
    if (this.engine.state === "failed" || this.engine.state === "stopped") {
      // It opens all the same (and fills in once the engine runs), but say why it has no models.
      void offerEngineFix(this.engine);
    }
    this.counter += 1;
    const column = this.panels.size > 0 ? vscode.ViewColumn.Beside : vscode.ViewColumn.Active;
    const title = this.counter === 1 ? vscode.l10n.t("Ingot Playground") : vscode.l10n.t("Ingot Playground {0}", this.counter);
    const panel = vscode.window.createWebviewPanel("ingot.playground", title, column, {
      enableScripts: true,
      retainContextWhenHidden: true,
      localResourceRoots: [vscode.Uri.joinPath(this.extensionUri, "dist", "webview"), vscode.Uri.joinPath(this.extensionUri, "media")],
    });
    panel.iconPath = vscode.Uri.joinPath(this.extensionUri, "media", "ingot.svg");
    const playground = new Playground(panel, this.extensionUri, this.engine, this.store, opts);
    this.panels.add(playground);
    panel.onDidDispose(() => this.panels.delete(playground));
    return playground;
  }

  /** The most recently focused playground, or a new one. */
  active(): Playground {
    const visible = [...this.panels].find((p) => p.panel.active) ?? [...this.panels].pop();
    return visible ?? this.open();
  }

  dispose(): void {
    for (const p of this.panels) {
      p.panel.dispose();
    }
  }
}

export class Playground {
  private session: ConsoleSession | undefined;
  private sessionSettings: PlaygroundSettings | undefined;
  private running: vscode.CancellationTokenSource | undefined;
  private ready = false;
  private readonly queue: ToPlayground[] = [];

  constructor(
    readonly panel: vscode.WebviewPanel,
    extensionUri: vscode.Uri,
    private readonly engine: Engine,
    private readonly store: ModelStore,
    private readonly opts: { model?: string; prefill?: string },
  ) {
    panel.webview.html = webviewHtml(panel.webview, extensionUri, {
      title: panel.title,
      script: "playground.js",
      body: playgroundBody(),
      strings: playgroundStrings(),
    });
    panel.webview.onDidReceiveMessage((msg: unknown) => {
      if (isFromPlayground(msg)) {
        void this.handle(msg);
      }
    });
    panel.onDidDispose(() => {
      this.running?.cancel();
      void this.closeSession();
    });
  }

  private post(msg: ToPlayground): void {
    if (!this.ready) {
      this.queue.push(msg);
      return;
    }
    void this.panel.webview.postMessage(msg);
  }

  private choices(): ModelChoice[] {
    return this.store
      .all()
      .filter((m) => m.cached && !isEmbedding(m)) // an embedding model cannot chat
      .map((m) => ({ id: m.id, label: this.store.label(m), loaded: m.loaded }));
  }

  postModels(): void {
    this.post({ type: "models", models: this.choices() });
  }

  /** Put text into the message box (Ask About Selection). */
  prefill(text: string): void {
    this.post({ type: "prefill", text });
    this.panel.reveal();
  }

  private defaultModel(choices: ModelChoice[]): string {
    const configured = vscode.workspace.getConfiguration("ingot").get<string>("defaultModel", "");
    const wanted = this.opts.model ?? configured;
    const match = choices.find((c) => c.id === wanted) ?? this.store.all().find((m) => m.cached && (m.alias === wanted || m.name === wanted));
    return match?.id ?? choices.find((c) => c.loaded)?.id ?? choices[0]?.id ?? "";
  }

  private async handle(msg: FromPlayground): Promise<void> {
    switch (msg.type) {
      case "ready": {
        this.ready = true;
        const models = this.choices();
        void this.panel.webview.postMessage({
          type: "init",
          models,
          settings: { model: this.defaultModel(models), system: "", temperature: 0.7, topP: 0.95, maxTokens: 256 },
        } satisfies ToPlayground);
        for (const m of this.queue.splice(0)) {
          void this.panel.webview.postMessage(m);
        }
        if (this.opts.prefill) {
          this.post({ type: "prefill", text: this.opts.prefill });
        }
        return;
      }
      case "stop":
        this.running?.cancel();
        return;
      case "clear":
        this.running?.cancel();
        await this.closeSession();
        this.post({ type: "cleared" });
        return;
      case "send":
        await this.send(msg.text, sanitizeSettings(msg.settings));
        return;
    }
  }

  private async closeSession(): Promise<void> {
    const s = this.session;
    this.session = undefined;
    this.sessionSettings = undefined;
    if (s && this.engine.state === "running") {
      await this.engine.request(ConsoleCloseRequest, { sessionId: s.sessionId }).catch(() => undefined);
    }
  }

  private async send(text: string, settings: PlaygroundSettings): Promise<void> {
    if (this.running || !text.trim()) {
      return;
    }
    if (!settings.model) {
      this.post({ type: "answerEnd", html: "", error: vscode.l10n.t("Download a model first (Ingot: Download Model).") });
      return;
    }
    const cts = new vscode.CancellationTokenSource();
    this.running = cts;
    try {
      if (this.session && this.sessionSettings && !sameSession(this.sessionSettings, settings)) {
        const hadHistory = this.session.messages.some((m) => m.role !== "system");
        await this.closeSession();
        if (hadHistory) {
          this.post({ type: "cleared", notice: vscode.l10n.t("The settings changed: a new conversation started.") });
        }
      }
      if (!this.session) {
        this.session = await this.engine.request(ConsoleOpenRequest, {
          model: settings.model,
          system: settings.system || undefined,
          temperature: settings.temperature,
          topP: settings.topP,
          maxTokens: settings.maxTokens,
        });
        this.sessionSettings = settings;
      }
      this.post({ type: "userMessage", html: renderMarkdown(text) });
      this.post({ type: "answerStart" });
      const token = crypto.randomUUID();
      let answer = "";
      let tokens = 0;
      let timer: NodeJS.Timeout | undefined;
      const flush = (): void => {
        timer = undefined;
        this.post({ type: "answerDelta", html: renderMarkdown(answer), tokens });
      };
      const sub = this.engine.onProgress(ConsoleSendPartialResult, token, (delta) => {
        answer += delta.text;
        tokens = delta.tokens;
        timer ??= setTimeout(flush, 40);
      });
      try {
        const result = await this.engine.request(ConsoleSendRequest, { sessionId: this.session.sessionId, message: text, partialResultToken: token }, cts.token);
        this.session = result.session;
        const g = result.generation;
        this.post({
          type: "answerEnd",
          html: renderMarkdown(g.text),
          stats: { ttftMs: g.telemetry.ttftMs, tps: g.telemetry.decodeTps, tokens: g.usage.completionTokens, finishReason: g.finishReason },
        });
        this.post({ type: "context", tokens: result.session.tokens, contextLength: result.session.contextLength });
      } catch (err) {
        if (isCancellation(err) || cts.token.isCancellationRequested) {
          this.post({ type: "answerEnd", html: renderMarkdown(answer), cancelled: true });
        } else {
          this.post({ type: "answerEnd", html: renderMarkdown(answer), error: errorMessage(err) });
        }
      } finally {
        if (timer) {
          clearTimeout(timer);
        }
        sub.dispose();
      }
    } catch (err) {
      this.post({ type: "answerEnd", html: "", error: errorMessage(err) ?? String(err) });
    } finally {
      this.running = undefined;
      cts.dispose();
    }
  }
}

function playgroundStrings(): Record<string, string> {
  const t = vscode.l10n.t;
  return {
    you: t("You"),
    assistant: t("Assistant"),
    stopped: t("Stopped."),
    noModels: t("No downloaded models"),
    ttft: t("time to first token"),
    tps: t("tokens/s"),
    tokens: t("tokens"),
    contextUsage: t("{0} of {1} context tokens"),
    thinking: t("Generating…"),
    truncated: t("(stopped at the max tokens limit)"),
    error: t("Error"),
  };
}

function playgroundBody(): string {
  const t = (text: string): string => escapeHtml(vscode.l10n.t(text));
  return `
<main class="playground">
  <form id="settings" class="settings" aria-label="${t("Settings")}">
    <label for="model">${t("Model")}</label>
    <select id="model" name="model"></select>
    <label for="system">${t("System prompt")}</label>
    <textarea id="system" rows="2" placeholder="${t("You are a helpful assistant.")}"></textarea>
    <div class="row">
      <span><label for="temperature">${t("Temperature")}</label>
      <input id="temperature" type="number" min="0" max="2" step="0.05" value="0.7"></span>
      <span><label for="topP">${t("Top P")}</label>
      <input id="topP" type="number" min="0.01" max="1" step="0.01" value="0.95"></span>
      <span><label for="maxTokens">${t("Max tokens")}</label>
      <input id="maxTokens" type="number" min="1" max="32768" step="1" value="256"></span>
    </div>
  </form>
  <section id="transcript" class="transcript" role="log" aria-live="polite" aria-label="${t("Conversation")}"></section>
  <form id="composer" class="composer" aria-label="${t("Message")}">
    <label for="message" class="sr-only">${t("Message")}</label>
    <textarea id="message" rows="3" placeholder="${t("Ask something. Enter sends, Shift+Enter adds a line.")}"></textarea>
    <div class="row">
      <button id="send" type="submit">${t("Send")}</button>
      <button id="stop" type="button" class="secondary" disabled>${t("Stop")}</button>
      <button id="clear" type="button" class="secondary">${t("Clear")}</button>
      <span id="context" class="meta" role="status" aria-live="polite"></span>
    </div>
  </form>
</main>`;
}
