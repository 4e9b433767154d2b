import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

// Run from extension/ (npm run test:unit).
const read = (p: string): string => readFileSync(p, "utf8");
const json = (p: string): Record<string, string> => JSON.parse(read(p)) as Record<string, string>;

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const f of readdirSync(dir)) {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) {
      if (f !== "webview" && f !== "protocol") {
        out.push(...sources(p));
      }
    } else if (p.endsWith(".ts")) {
      out.push(p);
    }
  }
  return out;
}

function usedStrings(): Set<string> {
  const used = new Set<string>();
  for (const f of sources("src")) {
    for (const m of read(f).matchAll(/\bt\(\s*("(?:[^"\\]|\\.)*")/g)) {
      used.add(JSON.parse(m[1]) as string);
    }
  }
  return used;
}

test("every vscode.l10n.t string is in the English and Korean bundles", () => {
  const used = usedStrings();
  assert.ok(used.size > 50);
  for (const bundle of ["l10n/bundle.l10n.json", "l10n/bundle.l10n.ko.json"]) {
    const b = json(bundle);
    const missing = [...used].filter((s) => !(s in b));
    assert.deepEqual(missing, [], `${bundle} lacks strings`);
    const stale = Object.keys(b).filter((k) => !used.has(k));
    assert.deepEqual(stale, [], `${bundle} has unused strings`);
  }
});

test("Korean strings keep their placeholders and codicons", () => {
  const ko = json("l10n/bundle.l10n.ko.json");
  for (const [en, tr] of Object.entries(ko)) {
    const marks = (s: string): string[] => (s.match(/\{\d+\}|\$\([^)]+\)/g) ?? []).sort();
    assert.deepEqual(marks(tr), marks(en), en);
  }
});

test("package.json %keys% exist in package.nls.json and package.nls.ko.json", () => {
  const keys = new Set([...read("package.json").matchAll(/"%([^%"]+)%"/g)].map((m) => m[1]));
  for (const file of ["package.nls.json", "package.nls.ko.json"]) {
    const nls = json(file);
    assert.deepEqual([...keys].filter((k) => !(k in nls)), [], file);
    assert.deepEqual(Object.keys(nls).filter((k) => !keys.has(k)), [], `${file} has unused keys`);
  }
});

test("every contributed command has a category and every command is localised", () => {
  const pkg = JSON.parse(read("package.json")) as { contributes: { commands: { command: string; title: string; category: string }[] } };
  for (const c of pkg.contributes.commands) {
    assert.equal(c.category, "Ingot", c.command);
    assert.match(c.title, /^%.+%$/, c.command);
  }
});
