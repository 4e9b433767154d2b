/** "Set up Ingot": a private Python environment in the extension's global storage with the engine
 * wheel the .vsix carries, installed behind a cancellable progress notification whose every line
 * goes to the log; a newer bundled wheel upgrades that environment (never a user's own). */

import { spawn } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import * as readline from "readline";
import * as vscode from "vscode";
import {
  PrivateEnv,
  PythonCommand,
  SetupFailureKind,
  VERSION_PROBE,
  WheelStamp,
  baseInterpreterCandidates,
  classifyFailure,
  needsInstall,
  parsePythonVersion,
  pickWheel,
  pipSteps,
  privateEnv,
  tail,
  versionOk,
} from "./setupPlan";

export type SetupState = "idle" | "running" | "failed";

interface Ran {
  code: number | null;
  output: string;
  cancelled: boolean;
}

/** A failed step: what went wrong, in the user's words, and its one fix. */
export class SetupFailed extends Error {
  constructor(
    readonly kind: SetupFailureKind,
    message: string,
  ) {
    super(message);
  }
}

export class EngineSetup implements vscode.Disposable {
  readonly env: PrivateEnv;
  private wheelCache: { path: string; stamp: WheelStamp } | null | undefined;
  private _state: SetupState = "idle";
  private _lastFailure: SetupFailed | undefined;
  private running: Promise<boolean> | undefined;
  private readonly stateEmitter = new vscode.EventEmitter<SetupState>();
  /** Fires when a setup starts, fails or finishes (the views show the failure and its fix). */
  readonly onDidChangeState = this.stateEmitter.event;

  constructor(
    private readonly extensionPath: string,
    globalStorage: string,
    private readonly output: vscode.LogOutputChannel,
    private readonly activePython: () => Promise<string | undefined>,
  ) {
    this.env = privateEnv(globalStorage, process.platform);
  }

  get state(): SetupState {
    return this._state;
  }

  get lastFailure(): SetupFailed | undefined {
    return this._lastFailure;
  }

  private setState(state: SetupState): void {
    this._state = state;
    void vscode.commands.executeCommand("setContext", "ingot.setupState", state);
    this.stateEmitter.fire(state);
  }

  dispose(): void {
    this.stateEmitter.dispose();
  }

  /** The engine wheel in the .vsix (engine/ingot_engine-*.whl) and its hash, or undefined when
   * this build of the extension carries none (a development checkout before its first build). */
  bundledWheel(): { path: string; stamp: WheelStamp } | undefined {
    if (this.wheelCache === undefined) {
      const dir = path.join(this.extensionPath, "engine");
      const name = fs.existsSync(dir) ? pickWheel(fs.readdirSync(dir)) : undefined;
      if (!name) {
        this.wheelCache = null;
      } else {
        const file = path.join(dir, name);
        const sha256 = crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
        this.wheelCache = { path: file, stamp: { wheel: name, sha256 } };
      }
    }
    return this.wheelCache ?? undefined;
  }

  /** The private environment's python when it has an engine installed by this extension. */
  installedPython(): string | undefined {
    return this.readStamp() && fs.existsSync(this.env.python) ? this.env.python : undefined;
  }

  /** Whether the private environment holds an older wheel than the bundled one. */
  outdated(): boolean {
    const bundled = this.bundledWheel();
    const stamp = this.readStamp();
    return bundled !== undefined && stamp !== undefined && needsInstall(stamp, bundled.stamp);
  }

  private readStamp(): WheelStamp | undefined {
    try {
      const value = JSON.parse(fs.readFileSync(this.env.stamp, "utf8")) as Partial<WheelStamp>;
      return typeof value.sha256 === "string" && typeof value.wheel === "string" ? { wheel: value.wheel, sha256: value.sha256 } : undefined;
    } catch {
      return undefined;
    }
  }

  /** Creates (or upgrades) the private environment. One run at a time; true when it is ready. */
  install(reason: "setup" | "upgrade"): Promise<boolean> {
    this.running ??= this.installOnce(reason).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async installOnce(reason: "setup" | "upgrade"): Promise<boolean> {
    const wheel = this.bundledWheel();
    if (!wheel) {
      this.fail(new SetupFailed("pip", vscode.l10n.t("This build of the Ingot extension carries no engine wheel. Install the engine yourself and set ingot.pythonPath to its Python.")));
      return false;
    }
    this.setState("running");
    this._lastFailure = undefined;
    const title = reason === "upgrade" ? vscode.l10n.t("Updating Ingot's engine") : vscode.l10n.t("Setting up Ingot");
    const started = Date.now();
    this.output.info(`[setup] ${reason} from ${wheel.path} into ${this.env.dir}`);
    try {
      await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, async (progress, cancel) => {
        const report = (message: string, increment?: number): void => progress.report({ message, increment });
        if (!(await this.envWorks(cancel))) {
          report(vscode.l10n.t("finding Python 3.11 or newer…"), 2);
          const base = await this.findBasePython(cancel);
          report(vscode.l10n.t("creating a private environment…"), 3);
          fs.rmSync(this.env.dir, { recursive: true, force: true });
          fs.mkdirSync(path.dirname(this.env.dir), { recursive: true });
          const made = await this.run(base.command, [...base.args, "-m", "venv", this.env.dir], cancel);
          this.check("venv", made);
        }
        // The new stamp is written only after the last step. An interrupted first install has none
        // (Set up Ingot is offered again); an interrupted upgrade keeps the old one, so the engine is
        // still found and the upgrade is tried again at the next start.
        const [wheelStep, depsStep] = pipSteps(wheel.path);
        report(vscode.l10n.t("installing the engine…"), 5);
        this.check("pip", await this.run(this.env.python, wheelStep, cancel));
        report(vscode.l10n.t("installing its packages (the first time downloads several hundred MB)…"), 5);
        let shown = 15;
        this.check(
          "pip",
          await this.run(this.env.python, depsStep, cancel, (line) => {
            const m = /^\s*(?:Collecting|Downloading|Using cached|Installing collected packages:)\s*(.*)$/.exec(line);
            if (m) {
              const step = shown < 85 ? 1 : 0;
              shown += step;
              report(vscode.l10n.t("installing {0}", m[1].split(/[\s/]/)[0].slice(0, 60)), step);
            }
          }),
        );
        fs.writeFileSync(this.env.stamp, JSON.stringify(wheel.stamp));
      });
    } catch (err) {
      this.fail(err instanceof SetupFailed ? err : new SetupFailed("pip", String(err)));
      return false;
    }
    this.output.info(`[setup] ${reason} finished in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    this.setState("idle");
    return true;
  }

  private fail(failure: SetupFailed): void {
    this._lastFailure = failure;
    this.setState(failure.kind === "cancelled" ? "idle" : "failed");
    this.output.warn(`[setup] ${failure.kind}: ${failure.message}`);
  }

  private check(step: "venv" | "pip", ran: Ran): void {
    if (ran.cancelled) {
      throw new SetupFailed("cancelled", vscode.l10n.t("Setting up Ingot was cancelled. Run Ingot: Set up Ingot to finish it."));
    }
    if (ran.code === 0) {
      return;
    }
    const kind = classifyFailure(step, ran.output);
    const why = tail(ran.output);
    const messages: Record<SetupFailureKind, string> = {
      noVenv: vscode.l10n.t("Python could not create a virtual environment ({0}). Install your Python's venv module (on Debian and Ubuntu: sudo apt install python3-venv), then run Ingot: Set up Ingot again.", why),
      network: vscode.l10n.t("The engine's packages could not be downloaded ({0}). Check the network or pip's proxy settings, then run Ingot: Set up Ingot again.", why),
      unsupported: vscode.l10n.t("A package the engine needs has no build for this Python or platform ({0}). Install Python 3.11 or 3.12 and select it in the Python extension (or put it first on PATH), then run Ingot: Set up Ingot again.", why),
      disk: vscode.l10n.t("The disk is full ({0}). Free some space, then run Ingot: Set up Ingot again.", why),
      pip: vscode.l10n.t("Installing the engine failed ({0}). The log has pip's whole output; run Ingot: Set up Ingot again once it is fixed.", why),
      noPython: why,
      cancelled: why,
    };
    throw new SetupFailed(kind, messages[kind]);
  }

  /** Whether the private environment's python runs (a half-made one is rebuilt). */
  private async envWorks(cancel: vscode.CancellationToken): Promise<boolean> {
    if (!fs.existsSync(this.env.python)) {
      return false;
    }
    const ran = await this.run(this.env.python, ["-c", "import sys, venv"], cancel, undefined, true);
    return ran.code === 0;
  }

  private async findBasePython(cancel: vscode.CancellationToken): Promise<PythonCommand> {
    const tried: string[] = [];
    for (const candidate of baseInterpreterCandidates(await this.activePython(), process.platform)) {
      const ran = await this.run(candidate.command, [...candidate.args, "-c", VERSION_PROBE], cancel, undefined, true);
      if (ran.cancelled) {
        this.check("venv", ran);
      }
      const version = ran.code === 0 ? parsePythonVersion(ran.output) : undefined;
      const label = [candidate.command, ...candidate.args].join(" ");
      tried.push(version ? `${label} (${version.join(".")})` : label);
      if (versionOk(version)) {
        this.output.info(`[setup] using ${label} (Python ${version?.join(".")})`);
        return candidate;
      }
    }
    throw new SetupFailed(
      "noPython",
      vscode.l10n.t("Ingot needs Python 3.11 or newer, and none was found (tried: {0}). Install Python 3.11+ from python.org or your package manager, then run Ingot: Set up Ingot again.", tried.join(", ")),
    );
  }

  /** Runs a command with its output in the log; a cancel ends it and its children. */
  private run(command: string, args: string[], cancel: vscode.CancellationToken, onLine?: (line: string) => void, quiet = false): Promise<Ran> {
    return new Promise((resolve) => {
      if (cancel.isCancellationRequested) {
        resolve({ code: null, output: "", cancelled: true }); // cancelled between two steps
        return;
      }
      const env: NodeJS.ProcessEnv = { ...process.env, PYTHONUNBUFFERED: "1", PIP_PROGRESS_BAR: "off", PIP_NO_INPUT: "1" };
      // The private environment is ours alone: nothing from a user's shell may leak into it.
      delete env.PYTHONPATH;
      delete env.PYTHONHOME;
      delete env.VIRTUAL_ENV;
      if (!quiet) {
        this.output.info(`[setup] $ ${[command, ...args].map((a) => (/\s/.test(a) ? `"${a}"` : a)).join(" ")}`);
      }
      let child;
      try {
        child = spawn(command, args, { env, detached: process.platform !== "win32", stdio: ["ignore", "pipe", "pipe"], windowsHide: true });
      } catch (err) {
        resolve({ code: null, output: String(err), cancelled: false });
        return;
      }
      const lines: string[] = [];
      const onData = (line: string): void => {
        lines.push(line);
        if (lines.length > 400) {
          lines.splice(0, lines.length - 400);
        }
        if (!quiet) {
          this.output.info(`[setup] ${line}`);
        }
        onLine?.(line);
      };
      readline.createInterface({ input: child.stdout }).on("line", onData);
      readline.createInterface({ input: child.stderr }).on("line", onData);
      let cancelled = false;
      const sub = cancel.onCancellationRequested(() => {
        cancelled = true;
        killTree(child.pid);
      });
      child.on("error", (err) => {
        sub.dispose();
        resolve({ code: null, output: `${lines.join("\n")}\n${String(err)}`, cancelled });
      });
      child.on("close", (code) => {
        sub.dispose();
        resolve({ code, output: lines.join("\n"), cancelled });
      });
    });
  }
}

function killTree(pid: number | undefined): void {
  if (pid === undefined) {
    return;
  }
  try {
    if (process.platform === "win32") {
      spawn("taskkill", ["/pid", String(pid), "/T", "/F"], { windowsHide: true });
    } else {
      process.kill(-pid, "SIGTERM");
    }
  } catch {
    // already gone
  }
}
