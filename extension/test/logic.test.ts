import { test } from "node:test";
import assert from "node:assert/strict";
import { Backoff } from "../src/backoff";
import { contextValue, fitBadge, groupCatalog, labelOf, loadedNames, modelDescription, modelLabel, restEndpoint } from "../src/catalog";
import { formatBytes, formatMs, formatTps, formatTtl, parseTtl, ttlRemaining } from "../src/format";
import { inlineAllowed } from "../src/inline";
import type { ModelInfo } from "../src/protocol/generated";

function model(over: Partial<ModelInfo>): ModelInfo {
  return {
    id: "m:1",
    name: "m",
    version: 1,
    alias: "m",
    displayName: "M",
    publisher: "p",
    device: "cpu",
    framework: "onnx",
    runtime: "onnx-genai",
    source: "build",
    sizeBytes: 270 * 1024 * 1024,
    contextLength: 8192,
    maxOutputTokens: 2048,
    license: "Apache-2.0",
    task: "chat-completion",
    capabilities: { chat: true, tools: false, jsonSchema: true, fim: false },
    cached: false,
    loaded: false,
    fits: true,
    fitReason: "fits in 20 GB free",
    memoryNeededBytes: 1,
    offered: true,
    ...over,
  };
}

test("backoff doubles up to the cap, gives up after max attempts, resets after a stable run", () => {
  const b = new Backoff({ initialMs: 100, maxMs: 500, stableMs: 1000, maxAttempts: 4 });
  assert.deepEqual([b.next(0), b.next(0), b.next(0), b.next(0)], [100, 200, 400, 500]);
  assert.equal(b.next(0), undefined);
  assert.equal(b.next(5000), 100, "a long run resets the delay");
  b.reset();
  assert.equal(b.failures, 0);
});

test("catalog groups downloaded and available, sorted by alias", () => {
  const g = groupCatalog([model({ id: "b:1", alias: "b", cached: true }), model({ id: "a:1", alias: "a" }), model({ id: "c:1", alias: "a", cached: true })]);
  assert.deepEqual(g.downloaded.map((m) => m.id), ["c:1", "b:1"]);
  assert.deepEqual(g.available.map((m) => m.id), ["a:1"]);
});

test("a model has one label: its alias, unless two variants share one", () => {
  const gguf = model({ id: "smol-cpu-gguf:1", alias: "smol", name: "smol-cpu-gguf" });
  const int8 = model({ id: "smol-cpu-int8:1", alias: "smol", name: "smol-cpu-int8" });
  const other = model({ id: "phi-cpu-int4:1", alias: "phi", name: "phi-cpu-int4" });
  const all = [gguf, int8, other];
  assert.equal(modelLabel(other, all), "phi");
  assert.equal(modelLabel(gguf, all), "smol-cpu-gguf");
  assert.equal(modelLabel(int8, all), "smol-cpu-int8");
  assert.equal(modelLabel(gguf, [gguf, other]), "smol");
  // Two versions of one variant: the whole id tells them apart.
  const v2 = model({ id: "smol-cpu-gguf:2", alias: "smol", name: "smol-cpu-gguf" });
  assert.equal(modelLabel(gguf, [gguf, v2]), "smol-cpu-gguf:1");
  assert.equal(modelLabel(v2, [gguf, v2]), "smol-cpu-gguf:2");
  // A command's argument (id, alias or name) gets the same label; unknown text stays as it is.
  assert.equal(labelOf("smol-cpu-gguf:1", all), "smol-cpu-gguf");
  assert.equal(labelOf("phi", all), "phi");
  assert.equal(labelOf("phi-cpu-int4", all), "phi");
  assert.equal(labelOf("smol", all), "smol", "an alias two variants share names neither");
  assert.equal(labelOf("smol", [gguf, other]), "smol");
  assert.equal(labelOf("nope:1", all), "nope:1");
});

test("model description, fit badge and context values", () => {
  assert.equal(modelDescription(model({})), "cpu · onnx-genai · 270 MB");
  assert.deepEqual(fitBadge(model({ fits: false, fitReason: "needs 9 GB" })), { fits: false, text: "needs 9 GB" });
  assert.deepEqual(fitBadge(model({ runtimeUnavailable: "vLLM is not installed" })), { fits: false, text: "vLLM is not installed" });
  assert.equal(contextValue(model({})), "model available");
  assert.equal(contextValue(model({ cached: true, loaded: true })), "model downloaded loaded");
  // The menus' regexes must tell "downloaded" and "loaded" apart.
  assert.ok(!/\bloaded\b/.test(contextValue(model({ cached: true }))));
});

test("REST endpoint and loaded names", () => {
  assert.equal(restEndpoint("http://127.0.0.1:5000/"), "http://127.0.0.1:5000/v1/chat/completions");
  assert.deepEqual(loadedNames([model({ loaded: true, id: "x:1", alias: "x", name: "x-cpu" }), model({})]), ["x:1", "x", "x-cpu"]);
});

test("formatting bytes, TTLs, speeds and times", () => {
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(1536), "1.5 KB");
  assert.equal(formatBytes(undefined), "—");
  assert.equal(formatTtl(65), "01:05");
  assert.equal(formatTtl(3661), "1:01:01");
  assert.equal(formatTtl(-1), "∞");
  assert.equal(formatTps(123.456), "123.5 tok/s");
  assert.equal(formatMs(59.6), "60 ms");
  assert.equal(formatMs(1500), "1.50 s");
  assert.equal(ttlRemaining(10, 1000, 4000), 7);
  assert.equal(ttlRemaining(1, 0, 5000), 0);
});

test("parsing TTLs typed by the user", () => {
  assert.equal(parseTtl("600"), 600);
  assert.equal(parseTtl("10m"), 600);
  assert.equal(parseTtl("1h"), 3600);
  assert.equal(parseTtl("-1"), -1);
  assert.equal(parseTtl("forever"), -1);
  assert.equal(parseTtl("0"), 0);
  assert.equal(parseTtl("ten"), undefined);
  assert.equal(parseTtl(""), undefined);
});

test("inline completions only when enabled and a model is loaded for them", () => {
  assert.equal(inlineAllowed(true, "", []), false);
  assert.equal(inlineAllowed(false, "", ["m:1"]), false);
  assert.equal(inlineAllowed(true, "", ["m:1"]), true);
  assert.equal(inlineAllowed(true, "other", ["m:1", "m"]), false);
  assert.equal(inlineAllowed(true, "m", ["m:1", "m"]), true);
});
