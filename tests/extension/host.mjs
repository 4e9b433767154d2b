// Extension-host tests: code-server with the smoke-test driver runs extension/out-test/host (the real
// vscode API, the real engine, the default model seeded into a fresh Ingot home).
import { mkdirSync, readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { ARTIFACTS, EXT_DIR, PYTHON, launchBrowser, log, makeRoot, seedHome, startCodeServer, writeSettings } from "./lib.mjs";

const root = makeRoot("host");
const home = join(root, "ingot-home");
const results = join(root, "host-results.json");
mkdirSync(ARTIFACTS, { recursive: true });
await seedHome(home);
writeSettings(root, { "ingot.pythonPath": PYTHON, "ingot.home": home, "ingot.inlineCompletions.enabled": false });
const server = await startCodeServer(root, {
  extraEnv: { INGOT_HOST_RESULTS: results, INGOT_THREADS: "2" },
  extraArgs: ["--vscode-option", "enable-smoke-test-driver"],
});
const browser = await launchBrowser();
let code;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
  const page = await context.newPage();
  const exited = new Promise((resolve) => page.exposeFunction("codeAutomationExit", (c) => resolve(c)));
  const remote = (p) => `vscode-remote://127.0.0.1:${server.port}${p}`;
  const payload = JSON.stringify([
    ["extensionDevelopmentPath", remote(EXT_DIR)],
    ["extensionTestsPath", remote(join(EXT_DIR, "out-test", "host", "index.js"))],
  ]);
  await page.goto(`${server.url}/?folder=${encodeURIComponent(join(root, "ws"))}&payload=${encodeURIComponent(payload)}`);
  code = await Promise.race([exited, new Promise((r) => setTimeout(() => r("timeout"), 240_000))]);
  await page.screenshot({ path: join(ARTIFACTS, "host-final.png") }).catch(() => undefined);
} finally {
  await browser.close().catch(() => undefined);
  await server.stop();
}
const list = existsSync(results) ? JSON.parse(readFileSync(results, "utf8")) : [];
for (const r of list) console.log(`${r.ok ? "ok" : "not ok"} - host: ${r.name} (${r.ms} ms)${r.ok ? "" : `\n  ${r.error.split("\n").slice(0, 5).join("\n  ")}`}`);
const passed = list.filter((r) => r.ok).length;
let failed = list.length - passed;
if (list.length === 0 || (code !== 0 && failed === 0)) {
  failed += 1;
  console.log(`not ok - host: the test run ended with ${code} and ${list.length} results`);
  log(server.logs.join("").slice(-3000));
}
console.log(`host: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
