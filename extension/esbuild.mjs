// Bundles the extension (Node, CommonJS), its webview scripts (browser IIFE), and, with --tests,
// the unit tests (out-test/unit) and the extension-host tests (out-test/host).
import * as esbuild from "esbuild";
import { readdirSync, rmSync } from "node:fs";

const production = process.argv.includes("--production");
const tests = process.argv.includes("--tests");
const common = { bundle: true, sourcemap: !production, minify: production, logLevel: "warning", target: "es2022" };

if (tests) {
  rmSync("out-test", { recursive: true, force: true });
  const unit = readdirSync("test").filter((f) => f.endsWith(".test.ts")).map((f) => `test/${f}`);
  await esbuild.build({ ...common, entryPoints: unit, outdir: "out-test/unit", platform: "node", format: "cjs", external: ["vscode"] });
  await esbuild.build({
    ...common,
    entryPoints: ["test-host/index.ts"],
    outfile: "out-test/host/index.js",
    platform: "node",
    format: "cjs",
    external: ["vscode"],
  });
} else {
  await Promise.all([
    esbuild.build({ ...common, entryPoints: ["src/extension.ts"], outfile: "dist/extension.js", platform: "node", format: "cjs", external: ["vscode"] }),
    esbuild.build({
      ...common,
      entryPoints: { playground: "src/webview/playground.ts", performance: "src/webview/performance.ts" },
      outdir: "dist/webview",
      platform: "browser",
      format: "iife",
    }),
  ]);
}
