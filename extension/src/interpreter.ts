/** Where to look for the Python that has Ingot installed: the project's .venv, then ingot.pythonPath, then the active Python. */

import * as path from "path";

export type CandidateSource = "venv" | "setting" | "active" | "path";

export interface Candidate {
  source: CandidateSource;
  command: string;
}

export interface CandidateInputs {
  workspaceFolders: string[];
  configuredPath: string | undefined;
  activePython: string | undefined;
  platform: NodeJS.Platform;
}

export function venvPython(folder: string, platform: NodeJS.Platform): string {
  return platform === "win32"
    ? path.win32.join(folder, ".venv", "Scripts", "python.exe")
    : path.posix.join(folder, ".venv", "bin", "python");
}

/** The interpreters to try, in order, without duplicates. */
export function interpreterCandidates(inputs: CandidateInputs): Candidate[] {
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
    add("venv", venvPython(folder, inputs.platform));
  }
  add("setting", inputs.configuredPath);
  add("active", inputs.activePython);
  add("path", inputs.platform === "win32" ? "python" : "python3");
  return out;
}

/** The command that installs Ingot into an interpreter (shown as the fix). */
export function installHint(python: string): string {
  return `"${python}" -m pip install ingot`;
}
