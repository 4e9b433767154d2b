import { test } from "node:test";
import assert from "node:assert/strict";
import { installHint, interpreterCandidates, venvPython, workspaceVenvPython } from "../src/interpreter";
import {
  baseInterpreterCandidates,
  classifyFailure,
  needsInstall,
  parsePythonVersion,
  pickWheel,
  pipSteps,
  privateEnv,
  tail,
  versionOk,
} from "../src/setupPlan";
import { EngineLogParser } from "../src/engineLog";
import { statusView } from "../src/format";
import { contextValue, loadedNames, modelDescription, restEndpoint } from "../src/catalog";
import type { ModelInfo } from "../src/protocol/generated";

test("interpreter candidates: workspace .venv, the private environment, the active Python, then PATH", () => {
  const c = interpreterCandidates({
    workspaceFolders: ["/w"],
    configuredPath: "  ",
    privatePython: "/g/engine-venv/bin/python",
    activePython: "/w/.venv/bin/python",
    platform: "linux",
  });
  assert.deepEqual(
    c.map((x) => [x.source, x.command]),
    [
      ["venv", "/w/.venv/bin/python"],
      ["private", "/g/engine-venv/bin/python"],
      ["path", "python3"],
    ],
  );
});

test("an explicit ingot.pythonPath is the only candidate: a broken one is reported, not replaced", () => {
  const c = interpreterCandidates({ workspaceFolders: ["/w"], configuredPath: " /opt/py ", privatePython: "/g/p", activePython: "/a", platform: "linux" });
  assert.deepEqual(c, [{ source: "setting", command: "/opt/py" }]);
});

test("venv paths per platform", () => {
  assert.equal(workspaceVenvPython("C:\\w", "win32"), "C:\\w\\.venv\\Scripts\\python.exe");
  assert.equal(venvPython("/s/engine-venv", "linux"), "/s/engine-venv/bin/python");
  const env = privateEnv("/storage", "linux");
  assert.equal(env.python, "/storage/engine-venv/bin/python");
  assert.equal(env.stamp, "/storage/engine-venv/ingot-wheel.json");
  assert.equal(privateEnv("C:\\s", "win32").python, "C:\\s\\engine-venv\\Scripts\\python.exe");
});

test("the install hint names the real wheel (never the unrelated PyPI project `ingot`)", () => {
  const hint = installHint("/usr/bin/python3", "/ext/engine/ingot_engine-0.1.0-py3-none-any.whl");
  assert.equal(hint, '"/usr/bin/python3" -m pip install "/ext/engine/ingot_engine-0.1.0-py3-none-any.whl[compile]"');
  assert.match(installHint("python3", undefined), /ingot-engine\[compile\]/);
  assert.doesNotMatch(installHint("python3", undefined), /install ingot\b(?!-)/);
});

test("base Pythons: the active interpreter, then the launcher on Windows, then PATH", () => {
  assert.deepEqual(baseInterpreterCandidates("/a/python", "linux"), [
    { command: "/a/python", args: [] },
    { command: "python3", args: [] },
    { command: "python", args: [] },
  ]);
  assert.deepEqual(baseInterpreterCandidates(undefined, "win32"), [
    { command: "py", args: ["-3"] },
    { command: "python", args: [] },
  ]);
});

test("Python 3.11 or newer", () => {
  assert.deepEqual(parsePythonVersion("3.12\n"), [3, 12]);
  assert.equal(parsePythonVersion("Python was not found"), undefined);
  assert.equal(versionOk([3, 11]), true);
  assert.equal(versionOk([3, 10]), false);
  assert.equal(versionOk([4, 0]), true);
  assert.equal(versionOk(undefined), false);
});

test("the bundled wheel: the newest ingot_engine wheel; a different one means a reinstall", () => {
  assert.equal(pickWheel(["README", "ingot_engine-0.1.0-py3-none-any.whl", "other-1.0-py3-none-any.whl"]), "ingot_engine-0.1.0-py3-none-any.whl");
  assert.equal(pickWheel(["ingot-0.1.0-py3-none-any.whl"]), undefined);
  const bundled = { wheel: "ingot_engine-0.2.0-py3-none-any.whl", sha256: "b" };
  assert.equal(needsInstall(undefined, bundled), true);
  assert.equal(needsInstall({ wheel: "ingot_engine-0.1.0-py3-none-any.whl", sha256: "a" }, bundled), true);
  assert.equal(needsInstall({ ...bundled }, bundled), false);
});

test("pip steps: the wheel forced in without dependencies, then its dependencies with the compile extra", () => {
  const [first, second] = pipSteps("/e/w.whl");
  assert.ok(first.includes("--force-reinstall") && first.includes("--no-deps") && first.at(-1) === "/e/w.whl");
  assert.equal(second.at(-1), "/e/w.whl[compile]");
  assert.ok(!second.includes("--force-reinstall"));
});

test("a failed step's output names its fix", () => {
  assert.equal(classifyFailure("venv", "Error: Command '['/x/bin/python', '-m', 'ensurepip']' returned non-zero exit status 1."), "noVenv");
  assert.equal(classifyFailure("pip", "WARNING: Retrying ... NewConnectionError: Failed to establish a new connection"), "network");
  assert.equal(classifyFailure("pip", "ERROR: No matching distribution found for onnxruntime-genai==0.18.0"), "unsupported");
  assert.equal(classifyFailure("pip", "Retrying after NewConnectionError\nERROR: No matching distribution found for x"), "network");
  assert.equal(classifyFailure("pip", "OSError: [Errno 28] No space left on device"), "disk");
  assert.equal(classifyFailure("pip", "ERROR: something else"), "pip");
  assert.equal(tail("a\n\nb\nc\nd\n", 2), "c d");
});

test("engine log lines keep their level; a traceback's lines stay with their record", () => {
  const p = new EngineLogParser();
  assert.deepEqual(p.parse("2026-12-04 19:00:00,123 INFO server.jsonrpc: started"), { level: "info", text: "server.jsonrpc: started" });
  assert.deepEqual(p.parse("2026-12-04 19:00:01,000 WARNING engine.loader: slow"), { level: "warn", text: "engine.loader: slow" });
  assert.equal(p.parse("2026-12-04 19:00:02,000 ERROR engine: boom").level, "error");
  assert.equal(p.parse('  File "x.py", line 1').level, "error");
  assert.equal(p.parse("2026-12-04 19:00:03,000 DEBUG engine: detail").level, "debug");
  const fresh = new EngineLogParser();
  assert.equal(fresh.parse("some plain line").level, "info");
  assert.equal(fresh.parse("Traceback (most recent call last):").level, "error");
});

test("the status bar: a first run is 'not set up' or 'setting up', never a red failure", () => {
  const missing = statusView("failed", [], undefined, "missing");
  assert.deepEqual([missing.label, missing.error, missing.action], ["notSetUp", false, "fix"]);
  const running = statusView("failed", [], undefined, "running");
  assert.deepEqual([running.label, running.error, running.action], ["settingUp", false, "log"]);
  const failed = statusView("failed", [], undefined, "none");
  assert.deepEqual([failed.label, failed.error], [undefined, true]);
});

test("embedding models: their task in the description, no playground, their own endpoint, no inline completions", () => {
  const base = { id: "e:1", name: "e", alias: "e", cached: true, loaded: true, device: "cpu", runtime: "onnxruntime", sizeBytes: 90 * 1024 * 1024 } as const;
  const emb = { ...base, task: "embeddings" } as unknown as ModelInfo;
  const chat = { ...base, id: "c:1", name: "c", alias: "c", task: "chat-completion" } as unknown as ModelInfo;
  assert.equal(modelDescription(emb), "embeddings · cpu · onnxruntime · 90.0 MB");
  assert.match(contextValue(emb), /\bembeddings\b/);
  assert.doesNotMatch(contextValue(chat), /\bembeddings\b/);
  assert.equal(restEndpoint("http://h:1/", true), "http://h:1/v1/embeddings");
  assert.equal(restEndpoint("http://h:1"), "http://h:1/v1/chat/completions");
  assert.deepEqual(loadedNames([emb, chat]), ["c:1", "c", "c"]);
});
