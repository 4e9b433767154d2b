import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { statusView } from "../src/format";

// Run from extension/ (npm run test:unit).
const read = (p: string): string => readFileSync(p, "utf8");

test("the status bar follows the engine: models and tok/s only while running, the fix when it failed", () => {
  const smol = { id: "smol-cpu-gguf:1", label: "smol" };
  const last = { modelId: smol.id, tps: 91.5 };
  assert.deepEqual(statusView("running", [smol], last), { icon: "$(circuit-board)", error: false, models: ["smol"], tps: 91.5, action: "performance" });
  // Unloaded: no model, and the old tok/s is gone with it.
  assert.deepEqual(statusView("running", [], last), { icon: "$(circuit-board)", error: false, models: [], tps: undefined, action: "performance" });
  assert.equal(statusView("running", [{ id: "phi:1", label: "phi" }], last).tps, undefined, "the rate of a model that is not loaded");
  for (const state of ["starting", "restarting"] as const) {
    const v = statusView(state, [smol], last);
    assert.equal(v.action, "log", state);
    assert.equal(v.models, undefined);
    assert.equal(v.tps, undefined);
  }
  const failed = statusView("failed", [smol], last);
  assert.equal(failed.error, true);
  assert.equal(failed.action, "fix", "a red item offers the fix, not an out-of-date performance view");
  assert.equal(failed.tps, undefined);
  assert.equal(statusView("stopped", [], undefined).action, "fix");
  assert.equal(statusView("stopped", [], undefined).error, false);
});

test("the Models view's welcome text follows the engine state, with the fix as buttons", () => {
  const pkg = JSON.parse(read("package.json")) as { contributes: { viewsWelcome: { view: string; contents: string; when?: string }[] } };
  const nls = JSON.parse(read("package.nls.json")) as Record<string, string>;
  const models = pkg.contributes.viewsWelcome.filter((w) => w.view === "ingot.models");
  // A tiny evaluator for the clauses used there: !key, key, key == value, &&, ||, parentheses.
  const holds = (when: string | undefined, ctx: Record<string, string | boolean | undefined>): boolean => {
    if (!when) {
      return true;
    }
    const js = when
      .replace(/([\w.]+)\s*(==|!=)\s*([\w-]+)/g, (_m, k: string, op: string, v: string) => `(ctx[${JSON.stringify(k)}] ${op}= ${JSON.stringify(v)})`)
      .replace(/!?\b(ingot\.\w+)\b(?!"\])/g, (m: string, k: string) => `${m.startsWith("!") ? "!" : ""}ctx[${JSON.stringify(k)}]`);
    return Boolean(new Function("ctx", `return ${js};`)(ctx));
  };
  const shown = (ctx: Record<string, string | boolean | undefined>): string[] =>
    models.filter((w) => holds(w.when, ctx)).map((w) => nls[w.contents.replace(/%/g, "")] ?? w.contents);
  const one = (ctx: Record<string, string | boolean | undefined>): string => {
    const texts = shown(ctx);
    assert.equal(texts.length, 1, `${JSON.stringify(ctx)}: ${texts.join(" | ")}`);
    return texts[0];
  };
  assert.match(one({}), /starting/, "before the engine said anything");
  assert.match(one({ "ingot.engineState": "starting" }), /starting/);
  assert.match(one({ "ingot.engineState": "restarting" }), /starting/);
  const missing = one({ "ingot.engineState": "failed", "ingot.engineMissing": true });
  assert.match(missing, /\(command:ingot\.setup\)/);
  assert.doesNotMatch(missing, /is starting/);
  const failed = one({ "ingot.engineState": "failed", "ingot.engineMissing": false });
  assert.match(failed, /\(command:ingot\.engine\.showLog\)/);
  assert.doesNotMatch(failed, /is starting/);
  assert.doesNotMatch(one({ "ingot.engineState": "stopped" }), /is starting/);
  assert.match(one({ "ingot.engineState": "running" }), /\(command:ingot\.refresh\)/);
});

test("one playground command: the model rows open ingot.playground.open with their model", () => {
  const pkg = read("package.json");
  assert.ok(!pkg.includes("ingot.model.openPlayground"));
  const menus = (JSON.parse(pkg) as { contributes: { menus: Record<string, { command: string; when?: string }[]> } }).contributes.menus;
  assert.ok(menus["view/item/context"].some((m) => m.command === "ingot.playground.open" && /downloaded/.test(m.when ?? "")));
});

test("webview buttons have a visible focus ring outside the button, in the theme's focus colour", () => {
  const css = read("media/webview.css");
  const rule = /button:focus-visible\s*\{([^}]*)\}/.exec(css);
  assert.ok(rule, "a button:focus-visible rule");
  assert.match(rule[1], /outline:\s*1px solid var\(--vscode-focusBorder\)/);
  const offset = /outline-offset:\s*(-?\d+)px/.exec(rule[1]);
  assert.ok(offset && Number(offset[1]) > 0, "drawn outside the button's own background");
});
