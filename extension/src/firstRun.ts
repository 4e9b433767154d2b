/** The "Set up Ingot" command: install the engine into the private environment, start it, and build
 * the offline default model, each step with progress; every failure is shown with its one fix. */

import * as vscode from "vscode";
import type { Engine } from "./engine";
import type { ModelStore } from "./models";
import type { ModelInfo } from "./protocol/generated";
import type { EngineSetup, SetupFailed } from "./setup";

/** The catalog alias of the offline default model (built from a PyPI package, no hub needed). */
export const DEFAULT_MODEL = "smollm2-135m";

export function registerSetupCommand(context: vscode.ExtensionContext, setup: EngineSetup, engine: Engine, store: ModelStore): void {
  context.subscriptions.push(vscode.commands.registerCommand("ingot.setup", () => setUp(setup, engine, store)));
}

/** Returns true when the engine runs and the default model is built. */
async function setUp(setup: EngineSetup, engine: Engine, store: ModelStore): Promise<boolean> {
  const configured = vscode.workspace.getConfiguration("ingot").get<string>("pythonPath")?.trim();
  if (configured) {
    const settings = vscode.l10n.t("Open Settings");
    const choice = await vscode.window.showInformationMessage(
      vscode.l10n.t("ingot.pythonPath is set, so Ingot runs the engine from {0}. Clear the setting to let Set up Ingot manage a private environment.", configured),
      settings,
    );
    if (choice === settings) {
      void vscode.commands.executeCommand("workbench.action.openSettings", "ingot.pythonPath");
    }
    return false;
  }
  const started = Date.now();
  if (!setup.installedPython() || setup.outdated()) {
    if (engine.state === "running" && engine.python === setup.env.python) {
      await engine.stop(); // never replace the files of an engine that is running from them
    }
    if (!(await setup.install("setup"))) {
      showFailure(setup.lastFailure);
      return false;
    }
  }
  if (engine.state !== "running") {
    await engine.restart({ confirmed: true });
  }
  if (engine.state !== "running") {
    const log = vscode.l10n.t("Show Log");
    const choice = await vscode.window.showErrorMessage(vscode.l10n.t("The engine is installed but did not start. The log says why."), log);
    if (choice === log) {
      engine.output.show(true);
    }
    return false;
  }
  await store.refresh();
  let model = store.all().find((m) => m.alias === DEFAULT_MODEL && m.cached);
  if (!model) {
    // The engine resolves the alias to the variant that fits this machine, and builds it offline.
    model = await vscode.commands.executeCommand<ModelInfo | undefined>("ingot.model.download", DEFAULT_MODEL);
    if (!model) {
      return false; // the download command has shown why (or the user cancelled it)
    }
  }
  engine.output.info(`[setup] ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const load = vscode.l10n.t("Load Model");
  const choice = await vscode.window.showInformationMessage(vscode.l10n.t("Ingot is set up. Load a model to chat with it."), load);
  if (choice === load) {
    void vscode.commands.executeCommand("ingot.model.load", model?.id);
  }
  return true;
}

function showFailure(failure: SetupFailed | undefined): void {
  if (!failure) {
    return;
  }
  if (failure.kind === "cancelled") {
    void vscode.window.showInformationMessage(failure.message);
    return;
  }
  const retry = vscode.l10n.t("Set up Ingot");
  const log = vscode.l10n.t("Show Log");
  void vscode.window.showErrorMessage(failure.message, retry, log).then((choice) => {
    if (choice === retry) {
      void vscode.commands.executeCommand("ingot.setup");
    } else if (choice === log) {
      void vscode.commands.executeCommand("ingot.engine.showLog");
    }
  });
}
