/** Ingot's VS Code extension: wires the engine client, the views, the webviews and the commands. */

import * as vscode from "vscode";
import { Engine, activePython } from "./engine";
import { EngineSetup } from "./setup";
import { registerSetupCommand } from "./firstRun";
import { LoadedTree, ModelArg, ModelStore, ModelsTree, modelIdOf } from "./models";
import { registerModelCommands } from "./modelCommands";
import { PlaygroundManager } from "./playground";
import { PerformancePanel } from "./performance";
import { StatusBar } from "./statusBar";
import { EditArgs, InlineEditController } from "./inlineEdit";

/** What activate() returns: used by the extension-host tests (and other extensions). */
export interface IngotApi {
  engine: Engine;
  store: ModelStore;
  playgrounds: PlaygroundManager;
  performance: PerformancePanel;
  status: StatusBar;
  edits: InlineEditController;
  setup: EngineSetup;
}

let engine: Engine | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<IngotApi> {
  const output = vscode.window.createOutputChannel("Ingot", { log: true });
  const setup = new EngineSetup(context.extensionPath, context.globalStorageUri.fsPath, output, activePython);
  engine = new Engine(output, setup);
  const store = new ModelStore(engine);
  engine.models = store;
  const modelsTree = new ModelsTree(store);
  const loadedTree = new LoadedTree(store);
  const playgrounds = new PlaygroundManager(context.extensionUri, engine, store);
  const performance = new PerformancePanel(context.extensionUri, engine);
  const status = new StatusBar(engine, store);
  const edits = new InlineEditController(engine);
  const e = engine;
  const modelsView = vscode.window.createTreeView("ingot.models", { treeDataProvider: modelsTree, showCollapseAll: false });

  context.subscriptions.push(
    output,
    e,
    store,
    loadedTree,
    playgrounds,
    performance,
    status,
    edits,
    setup,
    modelsView,
    // A failed setup's reason and fix stay above the Models view until the next try.
    setup.onDidChangeState((state) => {
      modelsView.message = state === "failed" ? setup.lastFailure?.message : undefined;
    }),
    vscode.window.createTreeView("ingot.loaded", { treeDataProvider: loadedTree }),
    vscode.commands.registerCommand("ingot.refresh", () => store.refresh()),
    vscode.commands.registerCommand("ingot.playground.open", (arg?: ModelArg) => {
      playgrounds.open({ model: modelIdOf(arg) });
    }),
    vscode.commands.registerCommand("ingot.performance.open", () => performance.show()),
    vscode.commands.registerCommand("ingot.edit.selection", (args?: EditArgs) => edits.editSelection(args ?? {})),
    vscode.commands.registerCommand("ingot.edit.accept", () => edits.accept()),
    vscode.commands.registerCommand("ingot.edit.reject", () => edits.reject()),
    vscode.commands.registerCommand("ingot.edit.cancel", () => edits.cancel()),
    vscode.commands.registerCommand("ingot.ask.selection", () => askAboutSelection(playgrounds)),
    vscode.commands.registerCommand("ingot.engine.restart", (options?: { confirmed?: boolean }) => e.restart(options)),
    vscode.commands.registerCommand("ingot.engine.showLog", () => e.output.show(true)),
    vscode.commands.registerCommand("ingot.inline.toggle", async () => {
      const config = vscode.workspace.getConfiguration("ingot");
      const on = !config.get<boolean>("inlineCompletions.enabled", true);
      await config.update("inlineCompletions.enabled", on, vscode.ConfigurationTarget.Global);
      void vscode.window.showInformationMessage(on ? vscode.l10n.t("Ingot inline completions are on.") : vscode.l10n.t("Ingot inline completions are off."));
    }),
    vscode.workspace.onDidChangeConfiguration((change) => {
      if (["ingot.pythonPath", "ingot.home", "ingot.restPort", "ingot.defaultTtl", "ingot.inlineCompletions.model"].some((k) => change.affectsConfiguration(k))) {
        const restart = vscode.l10n.t("Restart Engine");
        void vscode.window.showInformationMessage(vscode.l10n.t("Restart the Ingot engine to apply the new settings."), restart).then((choice) => {
          if (choice === restart) {
            void e.restart();
          }
        });
      }
    }),
  );
  registerModelCommands(context, e, store);
  registerSetupCommand(context, setup, e, store);
  void e.start();
  return { engine: e, store, playgrounds, performance, status, edits, setup };
}

function askAboutSelection(playgrounds: PlaygroundManager): void {
  const editor = vscode.window.activeTextEditor;
  const text = editor && !editor.selection.isEmpty ? editor.document.getText(editor.selection) : editor?.document.lineAt(editor.selection.active.line).text;
  if (!editor || !text) {
    void vscode.window.showInformationMessage(vscode.l10n.t("Select some text to ask about."));
    return;
  }
  const lang = editor.document.languageId;
  const fence = text.includes("```") ? "````" : "```";
  const prefill = `${vscode.l10n.t("About this code from {0}:", vscode.workspace.asRelativePath(editor.document.uri))}\n${fence}${lang}\n${text}\n${fence}\n`;
  const existing = playgrounds.count > 0 ? playgrounds.active() : undefined;
  if (existing) {
    existing.prefill(prefill);
  } else {
    playgrounds.open({ prefill });
  }
}

export async function deactivate(): Promise<void> {
  await engine?.stop();
  engine = undefined;
}
