/** Extension-host tests: the real `vscode` API in code-server, with the real engine on the default model.
 * Loaded as extensionTestsPath by tests/extension/host.mjs; results go to $INGOT_HOST_RESULTS. */

import * as assert from "assert/strict";
import { writeFileSync } from "fs";
import * as http from "http";
import type { AddressInfo } from "net";
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
// The default model's greedy rewrite of add() for this renames it to add_numbers (sub() it leaves as it is).
const RENAME = "Rename the function to add_numbers.";

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

/** A stand-in for a vLLM server elsewhere: /health, and /v1/models behind a bearer key. */
async function fakeDeployment(key: string): Promise<{ url: string; close: () => void }> {
  const server = http.createServer((req, res) => {
    if (req.url === "/health") {
      res.end();
    } else if (req.url === "/v1/models" && req.headers.authorization === `Bearer ${key}`) {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ object: "list", data: [{ id: "org/Remote-Model", object: "model", max_model_len: 4096 }] }));
    } else {
      res.statusCode = 401;
      res.end(JSON.stringify({ error: "Unauthorized" }));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
}

test("Attach Remote vLLM lists its model as runtime remote; a wrong key attaches nothing; Detach removes it", async (api) => {
  const dep = await fakeDeployment("host-test-key");
  try {
    const refused = await vscode.commands.executeCommand("ingot.remote.attach", undefined, { url: dep.url, apiKey: "wrong", name: "hostremote" });
    assert.equal(refused, undefined);
    assert.equal(api.store.find("hostremote:1"), undefined);
    const info = (await vscode.commands.executeCommand("ingot.remote.attach", undefined, { url: dep.url, apiKey: "host-test-key", name: "hostremote" })) as {
      name: string;
      models: { id: string; runtime: string; contextLength: number }[];
    };
    assert.equal(info.name, "hostremote");
    assert.deepEqual(info.models.map((m) => [m.id, m.runtime, m.contextLength]), [["hostremote:1", "remote", 4096]]);
    const m = await until("the remote model in the store", () => api.store.find("hostremote:1"));
    assert.equal(m.source, `remote:${dep.url}`);
    assert.equal(m.cached, true);
    await vscode.commands.executeCommand("ingot.remote.detach", "hostremote:1", { confirmed: true });
    await until("the remote model gone", () => api.store.find("hostremote:1") === undefined);
  } finally {
    dep.close();
  }
});

test("inline completions do not ask the engine while no model is loaded", async (api) => {
  assert.deepEqual(api.store.loaded(), [], "no model is loaded yet");
  const { sent, items } = await askInline(api, true);
  assert.equal(sent, 0, "no textDocument/inlineCompletion request was sent");
  assert.deepEqual(items, []);
});

test("Edit Selection with no model loaded says so and offers Load Model; the document is untouched", async (api) => {
  const editor = await openDoc(SAMPLE);
  editor.selection = new vscode.Selection(0, 0, 2, 0);
  await vscode.commands.executeCommand("ingot.edit.selection", { instruction: RENAME });
  assert.equal(api.edits.state, "idle");
  assert.deepEqual(api.edits.lastNotice, {
    severity: "error",
    message: "No model is loaded for Edit Selection. Load one, then try again.",
    actions: ["Load Model"],
  });
  assert.equal(proposalTabs().length, 0);
  assert.equal(editor.document.getText(), SAMPLE);
  await closeDoc(editor.document);
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

const readDisk = async (uri: vscode.Uri): Promise<string> => Buffer.from(await vscode.workspace.fs.readFile(uri)).toString("utf8");

/** The open diff editors of Ingot's edit proposals. */
function proposalTabs(): vscode.Tab[] {
  return vscode.window.tabGroups.all.flatMap((g) => g.tabs).filter((t) => t.input instanceof vscode.TabInputTextDiff && t.input.modified.scheme === "ingot-proposal");
}

/** The proposal's text once its document has caught up with the controller (it follows a little later)
 * and satisfies `ok`. */
async function proposal(api: IngotApi, what: string, ok: (text: string) => boolean): Promise<string> {
  return until(what, async () => {
    const uri = api.edits.proposalUri;
    if (!uri) {
      return false;
    }
    const text = (await vscode.workspace.openTextDocument(uri)).getText();
    return text === api.edits.proposalText(uri) && ok(text) && text;
  });
}

/** Run Edit Selection on `lines` of a new document holding `content`, to the finished proposal. */
async function proposeEdit(api: IngotApi, content: string, selection: vscode.Selection, instruction: string): Promise<vscode.TextDocument> {
  const editor = await openDoc(content);
  editor.selection = selection;
  await vscode.commands.executeCommand("ingot.edit.selection", { instruction });
  assert.equal(api.edits.state, "pending", `a proposal (the last message: ${api.edits.lastNotice?.message})`);
  await until("the diff editor", () => proposalTabs().length === 1);
  return editor.document;
}

async function closeDoc(doc: vscode.TextDocument): Promise<void> {
  await vscode.window.showTextDocument(doc);
  await vscode.commands.executeCommand("workbench.action.revertAndCloseActiveEditor");
}

test("Edit Selection previews the rewrite in a diff editor; the document is untouched and a save writes the original", async (api) => {
  const editor = await openDoc(SAMPLE);
  const doc = editor.document;
  editor.selection = new vscode.Selection(0, 0, 2, 0);
  const done = vscode.commands.executeCommand("ingot.edit.selection", { instruction: RENAME });
  await until("preview running", () => api.edits.state === "running", 15000);
  await done;
  assert.equal(api.edits.state, "pending");
  await until("the diff editor", () => proposalTabs().length === 1);
  const text = await proposal(api, "the rewrite in the proposal", (t) => t.startsWith("def add_numbers(a, b):"));
  assert.ok(text.endsWith("\n\n\ndef sub(a, b):\n    return a - b\n"), "the proposal is the whole file");
  assert.equal(doc.getText(), SAMPLE, "the preview does not change the document");
  assert.equal(doc.isDirty, false);
  assert.ok(await vscode.workspace.saveAll(false));
  await sleep(1500); // and auto-save, on after a 1 s delay in the browser's VS Code
  assert.equal(await readDisk(doc.uri), SAMPLE, "a save during the preview writes the original");
  await closeDoc(doc);
  await until("the proposal is dropped with its document", () => api.edits.state === "idle" && proposalTabs().length === 0);
});

test("Accept applies the rewrite as one edit: one Undo restores the original exactly", async (api) => {
  const doc = await proposeEdit(api, SAMPLE, new vscode.Selection(0, 0, 2, 0), RENAME);
  const text = await proposal(api, "the rewrite in the proposal", (t) => t.startsWith("def add_numbers(a, b):"));
  await vscode.commands.executeCommand("ingot.edit.accept");
  assert.equal(api.edits.state, "idle");
  assert.equal(proposalTabs().length, 0, "the diff editor is closed");
  assert.equal(doc.getText(), text, "the document is what the proposal showed");
  assert.equal(vscode.window.activeTextEditor?.document.uri.toString(), doc.uri.toString(), "the document has the focus back");
  await vscode.commands.executeCommand("undo");
  assert.equal(doc.getText(), SAMPLE, "one Undo restores the original");
  await vscode.commands.executeCommand("redo");
  assert.equal(doc.getText(), text, "and Redo the rewrite");
  await closeDoc(doc);
});

test("an edit above the selected lines moves the proposal; Accept applies it where the lines now are", async (api) => {
  const doc = await proposeEdit(api, SAMPLE, new vscode.Selection(0, 0, 2, 0), RENAME);
  // At the very start of the selected lines: still outside them.
  const edit = new vscode.WorkspaceEdit();
  edit.insert(doc.uri, new vscode.Position(0, 0), "import math\n\n\n");
  assert.ok(await vscode.workspace.applyEdit(edit));
  assert.equal(api.edits.state, "pending", "the proposal stays");
  const text = await proposal(api, "the proposal follows the document", (t) => t.startsWith("import math\n\n\ndef add_numbers(a, b):\n"));
  assert.ok(text.endsWith(SAMPLE.slice(SAMPLE.indexOf("\n\n\ndef sub"))));
  await vscode.commands.executeCommand("ingot.edit.accept");
  assert.equal(doc.getText(), text);
  await closeDoc(doc);
});

test("an edit inside the selected lines drops the proposal, and nothing is applied", async (api) => {
  const doc = await proposeEdit(api, SAMPLE, new vscode.Selection(0, 0, 2, 0), RENAME);
  const edit = new vscode.WorkspaceEdit();
  edit.insert(doc.uri, new vscode.Position(1, 4), "# changed\n    ");
  assert.ok(await vscode.workspace.applyEdit(edit));
  const edited = doc.getText();
  await until("dropped", () => api.edits.state === "idle" && proposalTabs().length === 0);
  assert.match(api.edits.lastNotice?.message ?? "", /proposal was dropped/);
  await vscode.commands.executeCommand("ingot.edit.accept");
  assert.equal(doc.getText(), edited, "Accept has nothing to apply");
  await closeDoc(doc);
});

test("Reject leaves the document byte-identical and its dirty state as it was", async (api) => {
  // The browser's VS Code saves after a delay by default: off here, so that the document stays dirty.
  const files = vscode.workspace.getConfiguration("files");
  await files.update("autoSave", "off", vscode.ConfigurationTarget.Global);
  try {
    await rejectKeepsDirtyDocument(api);
  } finally {
    await files.update("autoSave", undefined, vscode.ConfigurationTarget.Global);
  }
});

async function rejectKeepsDirtyDocument(api: IngotApi): Promise<void> {
  const editor = await openDoc(SAMPLE);
  const doc = editor.document;
  const scratch = new vscode.WorkspaceEdit();
  scratch.insert(doc.uri, doc.positionAt(SAMPLE.length), "# scratch\n");
  assert.ok(await vscode.workspace.applyEdit(scratch));
  const before = doc.getText();
  assert.equal(doc.isDirty, true);
  editor.selection = new vscode.Selection(0, 0, 2, 0);
  await vscode.commands.executeCommand("ingot.edit.selection", { instruction: RENAME });
  assert.equal(api.edits.state, "pending");
  await until("the diff editor", () => proposalTabs().length === 1);
  await vscode.commands.executeCommand("ingot.edit.reject");
  assert.equal(api.edits.state, "idle");
  assert.equal(proposalTabs().length, 0);
  assert.equal(doc.getText(), before);
  assert.equal(doc.isDirty, true);
  assert.equal(await readDisk(doc.uri), SAMPLE);
  await closeDoc(doc);
}

test("Cancel (Escape) stops a running edit and leaves the document as it was", async (api) => {
  const editor = await openDoc(SAMPLE);
  editor.selection = new vscode.Selection(0, 0, 5, 16);
  const done = vscode.commands.executeCommand("ingot.edit.selection", { instruction: "Rewrite this as a long essay about arithmetic." });
  await until("running", () => api.edits.state === "running", 15000);
  await sleep(300);
  await vscode.commands.executeCommand("ingot.edit.cancel");
  await done;
  assert.equal(api.edits.state, "idle");
  await until("the diff editor is closed", () => proposalTabs().length === 0);
  assert.equal(editor.document.getText(), SAMPLE);
  assert.equal(editor.document.isDirty, false);
  await closeDoc(editor.document);
});

test("an unchanged rewrite says so and offers no Accept or Reject", async (api) => {
  const editor = await openDoc(SAMPLE);
  // The default model's greedy answer to this is sub() as it was.
  editor.selection = new vscode.Selection(4, 0, 5, 16);
  await vscode.commands.executeCommand("ingot.edit.selection", { instruction: "Add a docstring." });
  assert.equal(api.edits.state, "idle");
  assert.deepEqual(api.edits.lastNotice, { severity: "info", message: "The model suggested no changes.", actions: [] });
  await until("no diff editor", () => proposalTabs().length === 0);
  assert.equal(editor.document.getText(), SAMPLE);
  assert.equal(editor.document.isDirty, false);
  await closeDoc(editor.document);
});

test("a selection too long for the model's context says to select less", async (api) => {
  const long = Array.from({ length: 1500 }, (_, i) => `value_${i} = ${i} * 2 + ${i % 7}\n`).join("");
  const editor = await openDoc(long);
  editor.selection = new vscode.Selection(0, 0, 1500, 0);
  await vscode.commands.executeCommand("ingot.edit.selection", { instruction: "Add comments." });
  assert.equal(api.edits.state, "idle");
  assert.deepEqual(api.edits.lastNotice, {
    severity: "warning",
    message: "The selection is too long for the model's context. Select fewer lines and try again.",
    actions: [],
  });
  assert.equal(editor.document.getText(), long);
  await closeDoc(editor.document);
});

test("playgrounds open side by side; Ask About Selection opens one with the selection", async (api) => {
  await vscode.commands.executeCommand("ingot.playground.open");
  await vscode.commands.executeCommand("ingot.playground.open", MODEL);
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

test("Show Info opens the model's details with its license, read-only: nothing asks to be saved", async () => {
  const uri = (await vscode.commands.executeCommand("ingot.model.info", MODEL)) as vscode.Uri | undefined;
  assert.ok(uri, "the info page's address");
  assert.equal(uri.scheme, "ingot-model");
  const doc = await vscode.workspace.openTextDocument(uri);
  assert.match(doc.getText(), /SmolLM2-135M-Instruct/);
  assert.match(doc.getText(), /license \| Apache-2\.0/);
  await until("the Markdown preview", () => webviewTabs("markdown.preview").length > 0);
  assert.ok(!vscode.workspace.textDocuments.some((d) => d.isUntitled || d.isDirty), "no untitled or unsaved document");
  await vscode.commands.executeCommand("workbench.action.closeAllEditors");
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
  assert.ok(!api.status.text.includes("tok/s"), `the unloaded model's rate is gone: ${api.status.text}`);
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

test("Edit Selection while the engine is stopped says so, with the fix and the log", async (api) => {
  await api.engine.stop();
  try {
    const editor = await openDoc(SAMPLE);
    editor.selection = new vscode.Selection(0, 0, 2, 0);
    await vscode.commands.executeCommand("ingot.edit.selection", { instruction: RENAME });
    assert.equal(api.edits.state, "idle");
    const notice = api.edits.lastNotice;
    assert.equal(notice?.message, "The Ingot engine is not running, so it cannot edit. Set it up, or see the log for why.");
    assert.ok(["Set up Ingot", "Restart Engine"].includes(notice.actions[0]), notice.actions[0]);
    assert.equal(notice.actions[1], "Show Log");
    await closeDoc(editor.document);
  } finally {
    void api.engine.start();
    await until("running again", () => api.engine.state === "running", 60000);
  }
});

test("with the engine stopped, Load Model says what to do instead of an empty picker; the status bar offers the fix", async (api) => {
  await api.engine.stop();
  try {
    assert.match(api.status.text, /stopped/);
    const command = api.status.item.command;
    assert.equal(typeof command === "object" ? command.command : command, "ingot.status.fix", "not the performance view");
    const result = await Promise.race([vscode.commands.executeCommand("ingot.model.load"), sleep(5000).then(() => "a picker is waiting")]);
    assert.equal(result, undefined);
  } finally {
    void api.engine.start();
    await until("running again", () => api.engine.state === "running", 60000);
  }
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
