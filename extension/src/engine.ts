/** The engine process: finds the interpreter, runs `python -m server` through vscode-languageclient, restarts it after a crash. */

import { execFile } from "child_process";
import * as fs from "fs";
import * as vscode from "vscode";
import {
  CancellationToken,
  CloseAction,
  ErrorAction,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
  TransportKind,
} from "vscode-languageclient/node";
import { NotificationType, ProgressType, RequestType, RequestType0 } from "vscode-jsonrpc";
import {
  InitializationOptions,
  ModelStateChanged,
  ModelStateChangedNotification,
  RequestTelemetry,
  ServiceReady,
  ServiceReadyNotification,
  TelemetryRequestNotification,
  TelemetrySample,
  TelemetrySampleNotification,
  TelemetrySubscribeRequest,
} from "./protocol/generated";
import { Backoff } from "./backoff";
import { installHint, interpreterCandidates } from "./interpreter";
import { inlineAllowed } from "./inline";
import type { ModelStore } from "./models";

export type EngineState = "stopped" | "starting" | "running" | "restarting" | "failed";

const PROBE = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('server.jsonrpc') and importlib.util.find_spec('engine') else 3)";

export class Engine implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private readonly backoff = new Backoff();
  private startedAt = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private _state: EngineState = "stopped";
  private _restUrl: string | undefined;
  private _pid: number | undefined;
  private readonly subscriptions: vscode.Disposable[] = [];
  readonly output: vscode.LogOutputChannel;
  private readonly stateEmitter = new vscode.EventEmitter<EngineState>();
  readonly onDidChangeState = this.stateEmitter.event;
  private readonly modelEmitter = new vscode.EventEmitter<ModelStateChanged>();
  readonly onModelStateChanged = this.modelEmitter.event;
  private readonly sampleEmitter = new vscode.EventEmitter<TelemetrySample>();
  readonly onTelemetrySample = this.sampleEmitter.event;
  private readonly requestEmitter = new vscode.EventEmitter<RequestTelemetry>();
  readonly onTelemetryRequest = this.requestEmitter.event;
  private readonly readyEmitter = new vscode.EventEmitter<ServiceReady>();
  readonly onServiceReady = this.readyEmitter.event;
  models: ModelStore | undefined;

  constructor() {
    this.output = vscode.window.createOutputChannel("Ingot", { log: true });
  }

  get state(): EngineState {
    return this._state;
  }

  get restUrl(): string | undefined {
    return this._restUrl;
  }

  /** The engine's process id (from ingot/serviceReady). */
  get pid(): number | undefined {
    return this._pid;
  }

  private setState(state: EngineState): void {
    this._state = state;
    void vscode.commands.executeCommand("setContext", "ingot.engineState", state);
    this.stateEmitter.fire(state);
  }

  /** The first interpreter that has Ingot installed, or undefined after telling the user how to fix it. */
  private async findPython(): Promise<string | undefined> {
    const config = vscode.workspace.getConfiguration("ingot");
    const candidates = interpreterCandidates({
      workspaceFolders: (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath),
      configuredPath: config.get<string>("pythonPath"),
      activePython: await activePython(),
      platform: process.platform,
    });
    const tried: string[] = [];
    for (const candidate of candidates) {
      if (candidate.source === "venv" && !fs.existsSync(candidate.command)) {
        continue;
      }
      tried.push(candidate.command);
      if (await probeSucceeds(candidate.command)) {
        this.output.appendLine(`[ingot] Python: ${candidate.command} (${candidate.source})`);
        return candidate.command;
      }
    }
    const python = tried[0] ?? "python3";
    const install = vscode.l10n.t("Show how to install");
    const setPath = vscode.l10n.t("Set Python Path");
    this.output.appendLine(`[ingot] Ingot is not installed in: ${tried.join(", ")}`);
    void vscode.window
      .showErrorMessage(
        vscode.l10n.t("Ingot is not installed in {0}. Install it there, or set ingot.pythonPath to a Python that has it.", python),
        install,
        setPath,
      )
      .then((choice) => {
        if (choice === install) {
          const terminal = vscode.window.createTerminal("Ingot setup");
          terminal.show();
          terminal.sendText(installHint(python), false);
        } else if (choice === setPath) {
          void vscode.commands.executeCommand("workbench.action.openSettings", "ingot.pythonPath");
        }
      });
    return undefined;
  }

  async start(): Promise<void> {
    this.stopping = false;
    this._restUrl = undefined;
    this._pid = undefined;
    this.setState("starting");
    const python = await this.findPython();
    if (!python) {
      this.setState("failed");
      return;
    }
    const config = vscode.workspace.getConfiguration("ingot");
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    const env: NodeJS.ProcessEnv = { ...process.env, PYTHONUNBUFFERED: "1" };
    const serverOptions: ServerOptions = {
      command: python,
      args: ["-m", "server"],
      transport: TransportKind.stdio,
      options: { env, cwd: folder },
    };
    const restPort = config.get<number>("restPort") ?? 0;
    const initializationOptions: InitializationOptions = {
      home: config.get<string>("home") || undefined,
      restPort: restPort > 0 ? restPort : undefined,
      defaultTtl: config.get<number>("defaultTtl"),
      inlineModel: config.get<string>("inlineCompletions.model") || undefined,
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
      outputChannel: this.output,
      traceOutputChannel: this.output,
      initializationOptions,
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue, handled: true }),
        closed: () => {
          this.scheduleRestart();
          return { action: CloseAction.DoNotRestart, handled: true };
        },
      },
      middleware: {
        provideInlineCompletionItems: (document, position, context, token, next) => {
          const enabled = vscode.workspace.getConfiguration("ingot").get<boolean>("inlineCompletions.enabled", true);
          const inlineModel = vscode.workspace.getConfiguration("ingot").get<string>("inlineCompletions.model", "");
          if (!inlineAllowed(enabled, inlineModel, this.models?.loadedNames() ?? [])) {
            return undefined;
          }
          return next(document, position, context, token);
        },
      },
    };
    const client = new LanguageClient("ingot", "Ingot", serverOptions, clientOptions);
    this.client = client;
    client.onDidChangeState((e) => {
      if (e.newState === State.Running) {
        this.setState("running");
      }
    });
    this.subscriptions.push(
      client.onNotification(ModelStateChangedNotification, (e) => this.modelEmitter.fire(e)),
      client.onNotification(TelemetrySampleNotification, (e) => this.sampleEmitter.fire(e)),
      client.onNotification(TelemetryRequestNotification, (e) => this.requestEmitter.fire(e)),
      client.onNotification(ServiceReadyNotification, (e) => {
        this._restUrl = e.url;
        this._pid = e.pid;
        this.output.appendLine(`[ingot] REST service: ${e.url} (${e.mode})`);
        this.readyEmitter.fire(e);
      }),
    );
    this.startedAt = Date.now();
    try {
      await client.start();
      await client.sendRequest(TelemetrySubscribeRequest, { intervalMs: 2000 });
    } catch (err) {
      this.output.appendLine(`[ingot] engine failed to start: ${String(err)}`);
      this.scheduleRestart();
    }
  }

  private scheduleRestart(): void {
    if (this.stopping || this.restartTimer) {
      return;
    }
    const delay = this.backoff.next(Date.now() - this.startedAt);
    this.disposeSubscriptions();
    if (delay === undefined) {
      this.setState("failed");
      const restart = vscode.l10n.t("Restart Engine");
      const log = vscode.l10n.t("Show Log");
      void vscode.window
        .showErrorMessage(vscode.l10n.t("The Ingot engine keeps crashing; it was not restarted. See the log for why."), restart, log)
        .then((choice) => {
          if (choice === restart) {
            void this.restart();
          } else if (choice === log) {
            this.output.show();
          }
        });
      return;
    }
    this.setState("restarting");
    this.output.appendLine(`[ingot] engine stopped; restarting in ${delay} ms (attempt ${this.backoff.failures})`);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      const old = this.client;
      this.client = undefined;
      void (old ? old.dispose().catch(() => undefined) : Promise.resolve()).then(() => this.start());
    }, delay);
  }

  async restart(): Promise<void> {
    this.backoff.reset();
    await this.stop();
    await this.start();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) {
      clearTimeout(this.restartTimer);
      this.restartTimer = undefined;
    }
    this.disposeSubscriptions();
    const client = this.client;
    this.client = undefined;
    if (client) {
      try {
        await client.stop(5000);
      } catch {
        // already gone
      }
    }
    this.setState("stopped");
  }

  private disposeSubscriptions(): void {
    for (const s of this.subscriptions.splice(0)) {
      s.dispose();
    }
  }

  private running(): LanguageClient {
    if (!this.client || this._state !== "running") {
      throw new Error(vscode.l10n.t("The Ingot engine is not running."));
    }
    return this.client;
  }

  request<R>(type: RequestType0<R, void>, token?: CancellationToken): Promise<R>;
  request<P, R>(type: RequestType<P, R, void>, params: P, token?: CancellationToken): Promise<R>;
  request(type: RequestType0<unknown, void> | RequestType<unknown, unknown, void>, ...rest: unknown[]): Promise<unknown> {
    const client = this.running();
    if (type instanceof RequestType0) {
      return client.sendRequest(type, rest[0] as CancellationToken | undefined);
    }
    return client.sendRequest(type as RequestType<unknown, unknown, void>, rest[0], rest[1] as CancellationToken | undefined);
  }

  onProgress<P>(type: ProgressType<P>, token: string, handler: (value: P) => void): vscode.Disposable {
    return this.running().onProgress(type, token, handler);
  }

  onNotification<P>(type: NotificationType<P>, handler: (value: P) => void): vscode.Disposable {
    return this.running().onNotification(type, handler);
  }

  dispose(): void {
    void this.stop();
    this.output.dispose();
  }
}

/** Whether `python` can import Ingot's engine and server (without blocking the extension host). */
function probeSucceeds(python: string): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(python, ["-c", PROBE], { timeout: 20000 }, (err) => resolve(!err));
  });
}

/** The interpreter the Python extension has selected, if it is installed. */
async function activePython(): Promise<string | undefined> {
  const ext = vscode.extensions.getExtension("ms-python.python");
  if (!ext) {
    return undefined;
  }
  try {
    const api = (await ext.activate()) as {
      environments?: { getActiveEnvironmentPath(): { path: string } };
    };
    return api.environments?.getActiveEnvironmentPath().path;
  } catch {
    return undefined;
  }
}
