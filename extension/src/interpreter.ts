/** Where to look for a Python that has Ingot's engine (pure, unit-tested): ingot.pythonPath when set,
 * else the workspace's .venv, the private environment that "Set up Ingot" made, the active Python, PATH. */

import * as path from "path";

export type CandidateSource = "setting" | "venv" | "private" | "active" | "path";

export interface Candidate {
  source: CandidateSource;
  command: string;
}

export interface CandidateInputs {
  workspaceFolders: string[];
  configuredPath: string | undefined;
  /** The python of the private environment in the extension's global storage. */
  privatePython: string | undefined;
  activePython: string | undefined;
  platform: NodeJS.Platform;
}

/** The distribution that holds the engine (the PyPI project named `ingot` is someone else's). */
export const DISTRIBUTION = "ingot-engine";

export function venvPython(folder: string, platform: NodeJS.Platform): string {
  return platform === "win32" ? path.win32.join(folder, "Scripts", "python.exe") : path.posix.join(folder, "bin", "python");
}

export function workspaceVenvPython(folder: string, platform: NodeJS.Platform): string {
  return venvPython(platform === "win32" ? path.win32.join(folder, ".venv") : path.posix.join(folder, ".venv"), platform);
}

/**
 * The interpreters to try, in order, without duplicates. An explicit ingot.pythonPath is the only
 * candidate: a user who manages their own environment wants to hear that it is broken, not to have
 * another Python picked behind their back.
 */
export function interpreterCandidates(inputs: CandidateInputs): Candidate[] {
  const configured = inputs.configuredPath?.trim();
  if (configured) {
    return [{ source: "setting", command: configured }];
  }
  const out: Candidate[] = [];
  const seen = new Set<string>();
  const add = (source: CandidateSource, command: string | undefined): void => {
    const value = command?.trim();
    if (value && !seen.has(value)) {
      seen.add(value);
      out.push({ source, command: value });
    }
  };
  for (const folder of inputs.workspaceFolders) {
    add("venv", workspaceVenvPython(folder, inputs.platform));
  }
  add("private", inputs.privatePython);
  add("active", inputs.activePython);
  add("path", inputs.platform === "win32" ? "python" : "python3");
  return out;
}

/** The command that installs the bundled engine wheel into `python` (the fix shown for ingot.pythonPath). */
export function installHint(python: string, wheel: string | undefined): string {
  const what = wheel ? `"${wheel}[compile]"` : `"${DISTRIBUTION}[compile]"`;
  return `"${python}" -m pip install ${what}`;
}
