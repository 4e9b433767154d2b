/** The pure parts of "Set up Ingot" (unit-tested): which Pythons may host the private environment,
 * where its files are, whether the bundled wheel is newer than what it holds, and what a failed step
 * means for the user. */

import * as path from "path";
import { venvPython } from "./interpreter";

/** The oldest Python the engine runs on (pyproject's requires-python). */
export const MIN_PYTHON: [number, number] = [3, 11];

/** One way to run a Python: a command and the arguments that come before ours (`py -3`). */
export interface PythonCommand {
  command: string;
  args: string[];
}

/** The Pythons to build the private environment from, in order: the Python extension's active
 * interpreter, the Windows launcher, then PATH. */
export function baseInterpreterCandidates(activePython: string | undefined, platform: NodeJS.Platform): PythonCommand[] {
  const out: PythonCommand[] = [];
  const add = (command: string, args: string[] = []): void => {
    if (!out.some((c) => c.command === command && c.args.join(" ") === args.join(" "))) {
      out.push({ command, args });
    }
  };
  if (activePython?.trim()) {
    add(activePython.trim());
  }
  if (platform === "win32") {
    add("py", ["-3"]);
    add("python");
  } else {
    add("python3");
    add("python");
  }
  return out;
}

/** Prints "major.minor" (the probe every candidate runs). */
export const VERSION_PROBE = "import sys; print('%d.%d' % sys.version_info[:2])";

export function parsePythonVersion(output: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)\s*$/m.exec(output.trim());
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

export function versionOk(v: [number, number] | undefined): boolean {
  return v !== undefined && (v[0] > MIN_PYTHON[0] || (v[0] === MIN_PYTHON[0] && v[1] >= MIN_PYTHON[1]));
}

export interface PrivateEnv {
  dir: string;
  python: string;
  /** Records which wheel was installed, so that a newer bundled one upgrades the environment. */
  stamp: string;
}

export function privateEnv(globalStorage: string, platform: NodeJS.Platform): PrivateEnv {
  const join = platform === "win32" ? path.win32.join : path.posix.join;
  const dir = join(globalStorage, "engine-venv");
  return { dir, python: venvPython(dir, platform), stamp: join(dir, "ingot-wheel.json") };
}

/** What the stamp file holds. */
export interface WheelStamp {
  wheel: string;
  sha256: string;
}

/** The wheel the .vsix carries: the one `ingot_engine-*.whl` in its engine/ folder. */
export function pickWheel(files: string[]): string | undefined {
  const wheels = files.filter((f) => /^ingot_engine-[^-]+-.+\.whl$/.test(f)).sort();
  return wheels.at(-1);
}

/** Whether the private environment must be (re)installed from the bundled wheel. */
export function needsInstall(stamp: WheelStamp | undefined, bundled: WheelStamp): boolean {
  return !stamp || stamp.sha256 !== bundled.sha256;
}

/** The pip arguments of the two install steps: the wheel itself (forced, so that a rebuilt wheel
 * of the same version replaces the old one), then its dependencies from the package index. */
export function pipSteps(wheel: string): string[][] {
  const common = ["-m", "pip", "install", "--disable-pip-version-check", "--no-input"];
  return [
    [...common, "--force-reinstall", "--no-deps", wheel],
    [...common, `${wheel}[compile]`],
  ];
}

export type SetupFailureKind = "noPython" | "noVenv" | "network" | "unsupported" | "disk" | "pip" | "cancelled";

/** What a failed step's output says went wrong: each kind has one fix the user is shown. */
export function classifyFailure(step: "venv" | "pip", output: string): SetupFailureKind {
  if (/No space left on device|\bENOSPC\b|\[Errno 28\]/i.test(output)) {
    return "disk";
  }
  if (step === "venv") {
    return "noVenv";
  }
  if (/NewConnectionError|Temporary failure in name resolution|Name or service not known|ConnectTimeout|ReadTimeout|Connection (refused|reset)|Could not fetch URL|ProxyError|SSLError/i.test(output)) {
    return "network";
  }
  // With the index reachable, no matching distribution means no build for this Python or platform.
  if (/No matching distribution found|Could not find a version that satisfies/i.test(output)) {
    return "unsupported";
  }
  return "pip";
}

/** The last lines of a long log, for an error message (the whole log is in the output channel). */
export function tail(text: string, lines = 3): string {
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0)
    .slice(-lines)
    .join(" ");
}
