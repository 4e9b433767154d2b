/** The engine process: finds the interpreter (or offers Set up Ingot), runs `python -m server` through vscode-languageclient, restarts it after a crash. */

import { execFile } from "child_process";
import * as fs from "fs";
import * as readline from "readline";
import type { Readable } from "stream";
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
import { EngineLogParser } from "./engineLog";
import type { EngineSetup } from "./setup";
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
  private _mode: ServiceReady["mode"] | undefined;
  private _python: string | undefined;
  private starting: Promise<void> | undefined;
  private _missing = false;
  private readonly subscriptions: vscode.Disposable[] = [];
  private readonly subscriptionsForever: vscode.Disposable[] = [];
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

  constructor(
    readonly output: vscode.LogOutputChannel,
    private readonly setup: EngineSetup,
  ) {
    // A setup that starts or ends changes what the status bar says: tell the engine's listeners.
    this.subscriptionsForever.push(setup.onDidChangeState(() => this.stateEmitter.fire(this._state)));
  }

  get state(): EngineState {
    return this._state;
  }

  get restUrl(): string | undefined {
    return this._restUrl;
  }

  /** The interpreter the engine runs (or last ran) on. */
  get python(): string | undefined {
    return this._python;
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

  /** The first interpreter that has Ingot's engine, or undefined after showing the state and its fix. */
  private async findPython(): Promise<string | undefined> {
    const config = vscode.workspace.getConfiguration("ingot");
    const candidates = interpreterCandidates({
      workspaceFolders: (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath),
      configuredPath: config.get<string>("pythonPath"),
      privatePython: this.setup.installedPython(),
      activePython: await activePython(),
      platform: process.platform,
    });
    const tried: string[] = [];
    for (const candidate of candidates) {
      if ((candidate.source === "venv" || candidate.source === "private") && !fs.existsSync(candidate.command)) {
        continue;
      }
      if (candidate.source === "private" && this.setup.outdated()) {
        // A newer engine came with this version of the extension: upgrade our own environment
        // (never one the user manages), and start the old one if the upgrade could not finish.
        await this.setup.install("upgrade");
      }
      tried.push(candidate.command);
      if (await probeSucceeds(candidate.command)) {
        this.output.info(`[ingot] Python: ${candidate.command} (${candidate.source})`);
        return candidate.command;
      }
    }
    const configured = candidates.find((c) => c.source === "setting");
    if (configured) {
      this.showBrokenSetting(configured.command);
    } else {
      this.output.warn(`[ingot] the engine is not installed in: ${tried.join(", ")}`);
      this.setMissing(true);
      const setUp = vscode.l10n.t("Set up Ingot");
      const own = vscode.l10n.t("Use My Own Python");
      void vscode.window
        .showInformationMessage(
          vscode.l10n.t("Ingot's engine is not set up yet. Set up Ingot installs it into a private environment (once; a few minutes)."),
          setUp,
          own,
        )
        .then((choice) => {
          if (choice === setUp) {
            void vscode.commands.executeCommand("ingot.setup");
          } else if (choice === own) {
            void vscode.commands.executeCommand("workbench.action.openSettings", "ingot.pythonPath");
          }
        });
    }
    return undefined;
  }

  /** ingot.pythonPath names a Python without the engine: say so, with the command that installs it there. */
  private showBrokenSetting(python: string): void {
    const hint = installHint(python, this.setup.bundledWheel()?.path);
    this.output.warn(`[ingot] ingot.pythonPath is ${python}, which cannot run the engine; install it there with: ${hint}`);
    const install = vscode.l10n.t("Show How to Install");
    const settings = vscode.l10n.t("Open Settings");
    void vscode.window
      .showErrorMessage(
        vscode.l10n.t("ingot.pythonPath is {0}, which does not have Ingot's engine. Install it there, or clear the setting and run Ingot: Set up Ingot.", python),
        install,
        settings,
      )
      .then((choice) => {
        if (choice === install) {
          const terminal = vscode.window.createTerminal(vscode.l10n.t("Ingot setup"));
          terminal.show();
          terminal.sendText(hint, false);
        } else if (choice === settings) {
          void vscode.commands.executeCommand("workbench.action.openSettings", "ingot.pythonPath");
        }
      });
  }

  /** For the status bar: the private environment is being made, or no engine was found. */
  get setupState(): "none" | "missing" | "running" {
    return this.setup.state === "running" ? "running" : this._missing ? "missing" : "none";
  }

  /** Whether no Python with the engine was found (the views offer Set up Ingot then). */
  get missing(): boolean {
    return this._missing;
  }

  private setMissing(missing: boolean): void {
    this._missing = missing;
    void vscode.commands.executeCommand("setContext", "ingot.engineMissing", missing);
  }

  /** Starts the engine; a start already under way is joined, never doubled (a second client would
   * spawn a second engine that then only forwards to the first). */
  start(): Promise<void> {
    this.starting ??= this.startOnce().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private async startOnce(): Promise<void> {
    this.stopping = false;
    this._restUrl = undefined;
    this._pid = undefined;
    this._mode = undefined;
    this.setState("starting");
    const python = await this.findPython();
    if (!python) {
      this.setState("failed");
      return;
    }
    this.setMissing(false);
    this._python = python;
    const config = vscode.workspace.getConfiguration("ingot");
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    const env: NodeJS.ProcessEnv = { ...process.env, PYTHONUNBUFFERED: "1" };
    if (python === this.setup.env.python) {
      // Our own environment: nothing from the user's shell may put other packages in front of it.
      delete env.PYTHONPATH;
      delete env.PYTHONHOME;
    }
    const serverOptions: ServerOptions = {
      command: python,
      // -P: the workspace folder (the cwd) is not put on sys.path, so a project with its own
      // `server` or `engine` package cannot shadow the engine's.
      args: ["-P", "-m", "server"],
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
      // The engine logs to stderr with a level on each record: keep it (INFO is not an error).
      stdioOptions: { stdout: pipeLog, stderr: pipeLog },
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
        this._mode = e.mode;
        this.output.info(`[ingot] REST service: ${e.url} (${e.mode})`);
        this.readyEmitter.fire(e);
      }),
    );
    this.startedAt = Date.now();
    try {
      await client.start();
      await client.sendRequest(TelemetrySubscribeRequest, { intervalMs: 2000 });
    } catch (err) {
      this.output.error(`[ingot] engine failed to start: ${String(err)}`);
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
    this.output.warn(`[ingot] engine stopped; restarting in ${delay} ms (attempt ${this.backoff.failures})`);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      const old = this.client;
      this.client = undefined;
      void (old ? old.dispose().catch(() => undefined) : Promise.resolve()).then(() => this.start());
    }, delay);
  }

  /** Restarts the engine; when it owns models kept loaded (TTL -1), asks first and offers to load
   * them again, since a restart unloads them. `confirmed` skips the question (tests, scripts). */
  async restart(options: { confirmed?: boolean } = {}): Promise<void> {
    const kept = this._mode === "engine" && this._state === "running" ? (this.models?.loaded() ?? []).filter((m) => (m.ttlSeconds ?? 0) < 0) : [];
    let reload: string[] = [];
    if (kept.length > 0 && !options.confirmed) {
      const again = vscode.l10n.t("Restart and Load Them Again");
      const anyway = vscode.l10n.t("Restart");
      const choice = await vscode.window.showWarningMessage(
        vscode.l10n.t("Restarting the engine unloads {0}, kept loaded until you unload it.", kept.map((m) => m.alias).join(", ")),
        { modal: true },
        again,
        anyway,
      );
      if (choice === undefined) {
        return;
      }
      reload = choice === again ? kept.map((m) => m.id) : [];
    }
    this.backoff.reset();
    await this.stop();
    await this.start();
    for (const id of reload) {
      await vscode.commands.executeCommand("ingot.model.load", id, { ttl: -1 });
    }
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
    for (const s of this.subscriptionsForever.splice(0)) {
      s.dispose();
    }
  }
}

/** Writes the engine's stdout/stderr lines to the log channel at the level each record carries. */
function pipeLog(input: Readable, channel: vscode.LogOutputChannel): void {
  const parser = new EngineLogParser();
  readline.createInterface({ input, crlfDelay: Infinity, terminal: false, historySize: 0 }).on("line", (line) => {
    const { level, text } = parser.parse(line);
    channel[level](text);
  });
}

/** Whether `python` can import Ingot's engine and server (without blocking the extension host). */
function probeSucceeds(python: string): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(python, ["-P", "-c", PROBE], { timeout: 20000 }, (err) => resolve(!err));
  });
}

/** The interpreter the Python extension has selected, if it is installed. */
export async function activePython(): Promise<string | undefined> {
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
