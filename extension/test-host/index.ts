/** Extension-host tests: the real `vscode` API in code-server, with the real engine on the default model.
 * Loaded as extensionTestsPath by tests/extension/host.mjs; results go to $INGOT_HOST_RESULTS. */

import * as assert from "assert/strict";
import { writeFileSync } from "fs";
import * as vscode from "vscode";
import type { IngotApi } from "../src/extension";

const MODEL = "smollm2-135m-instruct-cpu-gguf:1";
type Test = { name: string; fn: (api: IngotApi) => Promise<void> };
const tests: Test[] = [];
const test = (name: string, fn: (api: IngotApi) => Promise<void>): void => {
  tests.push({ name, fn });
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 30000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await sleep(100);
  }
}

function webviewTabs(viewType: string): vscode.Tab[] {
  return vscode.window.tabGroups.all.flatMap((g) => g.tabs).filter((t) => t.input instanceof vscode.TabInputWebview && t.input.viewType.includes(viewType));
}

async function openDoc(content: string): Promise<vscode.TextEditor> {
  const folder = vscode.workspace.workspaceFolders![0].uri;
  const uri = vscode.Uri.joinPath(folder, `sample-${Date.now()}.py`);
  await vscode.workspace.fs.writeFile(uri, Buffer.from(content));
  const doc = await vscode.workspace.openTextDocument(uri);
  return vscode.window.showTextDocument(doc);
}

const SAMPLE = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n";

type InlineResult = vscode.InlineCompletionItem[] | vscode.InlineCompletionList | null | undefined;
type InlineProvider = { provideInlineCompletionItems(d: vscode.TextDocument, p: vscode.Position, c: vscode.InlineCompletionContext, t: vscode.CancellationToken): Thenable<InlineResult> | InlineResult };
type Client = {
  sendRequest: (type: unknown, ...rest: unknown[]) => Promise<unknown>;
  getFeature(method: string): { getProvider(d: vscode.TextDocument): InlineProvider | undefined } | undefined;
};

/** Ask the extension's real inline completion provider (vscode-languageclient's, through the extension's
 * middleware) at the end of the document, counting the textDocument/inlineCompletion requests it sends. */
async function askInline(api: IngotApi, enabled: boolean): Promise<{ sent: number; items: vscode.InlineCompletionItem[] }> {
  const config = vscode.workspace.getConfiguration("ingot");
  await config.update("inlineCompletions.enabled", enabled, vscode.ConfigurationTarget.Global);
  const editor = await openDoc("def is_even(n):\n    return n % 2");
  const client = (api.engine as unknown as { client: Client }).client;
  const provider = client.getFeature("textDocument/inlineCompletion")?.getProvider(editor.document);
  assert.ok(provider, "the engine registered an inline completion provider");
  let sent = 0;
  const original = client.sendRequest;
  client.sendRequest = (type: unknown, ...rest: unknown[]) => {
    const method = typeof type === "string" ? type : (type as { method?: string }).method;
    if (method === "textDocument/inlineCompletion") {
      sent++;
    }
    return original.call(client, type, ...rest);
  };
  try {
    const end = editor.document.lineAt(editor.document.lineCount - 1).range.end;
    const context: vscode.InlineCompletionContext = { triggerKind: vscode.InlineCompletionTriggerKind.Invoke, selectedCompletionInfo: undefined };
    const tokens = new vscode.CancellationTokenSource();
    const result = await provider.provideInlineCompletionItems(editor.document, end, context, tokens.token);
    const items = !result ? [] : Array.isArray(result) ? result : result.items;
    return { sent, items };
  } finally {
    client.sendRequest = original;
    await config.update("inlineCompletions.enabled", false, vscode.ConfigurationTarget.Global);
    await vscode.commands.executeCommand("workbench.action.revertAndCloseActiveEditor");
  }
}

test("the extension activates and the engine starts; the REST service is announced", async (api) => {
  await until("engine running", () => api.engine.state === "running", 90000);
  const url = await until("serviceReady", () => api.engine.restUrl, 30000);
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+/);
  assert.ok(api.engine.pid && api.engine.pid > 0);
});

test("every contributed command is registered", async () => {
  const pkg = vscode.extensions.getExtension("ingot.ingot")!.packageJSON as { contributes: { commands: { command: string }[] } };
  const registered = new Set(await vscode.commands.getCommands(true));
  const missing = pkg.contributes.commands.map((c) => c.command).filter((c) => !registered.has(c));
  assert.deepEqual(missing, []);
});

test("the Models view lists the seeded default model as downloaded", async (api) => {
  await vscode.commands.executeCommand("ingot.refresh");
  const m = await until("catalog", () => api.store.find(MODEL));
  assert.equal(m.cached, true);
  assert.equal(m.alias, "smollm2-135m");
  assert.equal(m.runtime, "onnx-genai");
});

test("inline completions do not ask the engine while no model is loaded", async (api) => {
  assert.deepEqual(api.store.loaded(), [], "no model is loaded yet");
  const { sent, items } = await askInline(api, true);
  assert.equal(sent, 0, "no textDocument/inlineCompletion request was sent");
  assert.deepEqual(items, []);
});

test("ingot.model.load loads with the given TTL; the Loaded view and the status bar show it", async (api) => {
  const info = (await vscode.commands.executeCommand("ingot.model.load", MODEL, { ttl: 300 })) as { loaded: boolean } | undefined;
  assert.ok(info?.loaded, "load returned the loaded model");
  await until("store shows loaded", () => api.store.loaded().some((m) => m.id === MODEL));
  const left = api.store.ttlLeft(api.store.find(MODEL)!);
  assert.ok(left === undefined || (left > 0 && left <= 300), `ttl left ${left}`);
  await until("status bar", () => api.status.text.includes("smollm2-135m"));
});

test("with a model loaded, inline completions ask the engine and return its ghost text; disabled, they do not", async (api) => {
  const on = await askInline(api, true);
  assert.ok(on.sent >= 1, "a textDocument/inlineCompletion request was sent");
  assert.ok(on.items.length >= 1, "the engine returned a completion");
  const text = on.items[0].insertText;
  assert.ok(typeof text === "string" ? text.trim().length > 0 : text.value.trim().length > 0, "with text");
  const off = await askInline(api, false);
  assert.equal(off.sent, 0, "ingot.inlineCompletions.enabled false: no request");
  assert.deepEqual(off.items, []);
});

test("Edit Selection streams a preview below the selection; Accept keeps the rewrite", async (api) => {
  const editor = await openDoc(SAMPLE);
  editor.selection = new vscode.Selection(0, 0, 2, 0);
  const done = vscode.commands.executeCommand("ingot.edit.selection", { instruction: "Rename the function to add_numbers." });
  await until("preview running", () => api.edits.state === "running", 15000);
  await done;
  assert.equal(api.edits.state, "pending");
  const preview = editor.document.getText();
  assert.ok(preview.startsWith("def add(a, b):\n    return a + b\n"), "the original stays above the preview");
  assert.ok(preview.length > SAMPLE.length, "the rewrite is inserted");
  await vscode.commands.executeCommand("ingot.edit.accept");
  assert.equal(api.edits.state, "idle");
  const after = editor.document.getText();
  assert.ok(!after.startsWith("def add(a, b):\n    return a + b\n"), "the original lines are gone");
  assert.ok(after.startsWith("def add_numbers(a, b):"), "the greedy rewrite of the default model");
  assert.ok(after.endsWith("def sub(a, b):\n    return a - b\n"), "the rest of the file is untouched");
  await vscode.commands.executeCommand("workbench.action.revertAndCloseActiveEditor");
});

test("Reject restores the original text exactly", async (api) => {
  const editor = await openDoc(SAMPLE);
  editor.selection = new vscode.Selection(4, 0, 5, 16);
  await vscode.commands.executeCommand("ingot.edit.selection", { instruction: "Add a docstring." });
  assert.equal(api.edits.state, "pending");
  await vscode.commands.executeCommand("ingot.edit.reject");
  assert.equal(editor.document.getText(), SAMPLE);
  await vscode.commands.executeCommand("workbench.action.revertAndCloseActiveEditor");
});

test("Cancel (Escape) stops a running edit and leaves the document as it was", async (api) => {
  const editor = await openDoc(SAMPLE);
  editor.selection = new vscode.Selection(0, 0, 5, 16);
  const done = vscode.commands.executeCommand("ingot.edit.selection", { instruction: "Rewrite this as a long essay about arithmetic." });
  await until("running", () => api.edits.state === "running", 15000);
  await sleep(300);
  await vscode.commands.executeCommand("ingot.edit.cancel");
  await done;
  assert.equal(api.edits.state, "idle");
  assert.equal(editor.document.getText(), SAMPLE);
  await vscode.commands.executeCommand("workbench.action.revertAndCloseActiveEditor");
});

test("playgrounds open side by side; Ask About Selection opens one with the selection", async (api) => {
  await vscode.commands.executeCommand("ingot.playground.open");
  await vscode.commands.executeCommand("ingot.model.openPlayground", MODEL);
  await until("two playground tabs", () => webviewTabs("ingot.playground").length >= 2);
  const columns = new Set(webviewTabs("ingot.playground").map((t) => t.group.viewColumn));
  assert.ok(columns.size >= 2, "in different editor groups");
  const before = api.playgrounds.count;
  const editor = await openDoc(SAMPLE);
  editor.selection = new vscode.Selection(0, 0, 1, 16);
  await vscode.commands.executeCommand("ingot.ask.selection");
  assert.ok(api.playgrounds.count >= before);
  await vscode.commands.executeCommand("workbench.action.closeAllEditors");
  await until("playgrounds closed", () => api.playgrounds.count === 0);
});

test("the performance view opens and receives telemetry", async (api) => {
  await vscode.commands.executeCommand("ingot.performance.open");
  await until("performance tab", () => webviewTabs("ingot.performance").length === 1);
  assert.ok(api.performance.isOpen);
  let samples = 0;
  const sub = api.engine.onTelemetrySample(() => samples++);
  await until("two telemetry samples", () => samples >= 2, 15000);
  sub.dispose();
  await vscode.commands.executeCommand("workbench.action.closeAllEditors");
});

test("Show Info opens the model's details with its license", async () => {
  await vscode.commands.executeCommand("ingot.model.info", MODEL);
  const doc = await until("info document", () => vscode.window.activeTextEditor?.document.languageId === "markdown" && vscode.window.activeTextEditor.document);
  const text = doc.getText();
  assert.match(text, /SmolLM2-135M-Instruct/);
  assert.match(text, /license \| Apache-2\.0/);
  await vscode.commands.executeCommand("workbench.action.revertAndCloseActiveEditor");
});

test("Copy REST Endpoint puts the OpenAI-compatible URL on the clipboard", async (api) => {
  await vscode.commands.executeCommand("ingot.model.copyEndpoint", MODEL);
  const text = await vscode.env.clipboard.readText();
  assert.equal(text, `${api.engine.restUrl}/v1/chat/completions`);
});

test("ingot.model.unload unloads it; the status bar says so", async (api) => {
  await vscode.commands.executeCommand("ingot.model.unload", MODEL);
  await until("unloaded", () => !api.store.loaded().some((m) => m.id === MODEL));
  await until("status bar", () => api.status.text.includes("no model loaded"));
});

test("the engine restarts by itself after a crash", async (api) => {
  const pid = api.engine.pid!;
  const states: string[] = [];
  const sub = api.engine.onDidChangeState((s) => states.push(s));
  process.kill(pid, "SIGKILL");
  await until("restarting", () => states.includes("restarting"), 15000);
  await until("running again", () => api.engine.state === "running" && api.engine.pid !== undefined && api.engine.pid !== pid, 60000);
  sub.dispose();
});

test("Restart Engine restarts it on request", async (api) => {
  const pid = api.engine.pid;
  await vscode.commands.executeCommand("ingot.engine.restart");
  await until("running again", () => api.engine.state === "running" && api.engine.pid !== undefined && api.engine.pid !== pid, 60000);
});

test("Delete removes the model from the cache", async (api) => {
  await vscode.commands.executeCommand("ingot.model.delete", MODEL, { confirmed: true });
  await until("not cached", () => api.store.find(MODEL)?.cached === false);
});

export async function run(): Promise<void> {
  const results: { name: string; ok: boolean; ms: number; error?: string }[] = [];
  const out = process.env.INGOT_HOST_RESULTS;
  const save = (): void => {
    if (out) {
      writeFileSync(out, JSON.stringify(results, null, 2));
    }
  };
  const ext = vscode.extensions.getExtension<IngotApi>("ingot.ingot");
  if (!ext) {
    throw new Error("the extension ingot.ingot is not installed");
  }
  const api = await ext.activate();
  for (const t of tests) {
    const t0 = Date.now();
    try {
      await t.fn(api);
      results.push({ name: t.name, ok: true, ms: Date.now() - t0 });
    } catch (err) {
      results.push({ name: t.name, ok: false, ms: Date.now() - t0, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    }
    save();
  }
  const failed = results.filter((r) => !r.ok).length;
  if (failed) {
    throw new Error(`${failed} extension-host test(s) failed`);
  }
}
