/** Pure view-model logic for remote vLLM deployments attached by URL (unit-tested). */

import type { ModelInfo } from "./protocol/generated";

const PREFIX = "remote:";
/** What Ingot accepts as an attachment's name (the engine's registration rule). */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A model an attached deployment serves (`ingot model attach`): no files or memory here. */
export function isRemote(model: Pick<ModelInfo, "source">): boolean {
  return model.source.startsWith(PREFIX);
}

/** The deployment's base URL, for a remote model. */
export function remoteUrl(model: Pick<ModelInfo, "source">): string | undefined {
  return isRemote(model) ? model.source.slice(PREFIX.length) : undefined;
}

/** The device and runtime the views show: `remote` for an attached deployment's model. */
export function shownDevice(model: Pick<ModelInfo, "source" | "device">): string {
  return isRemote(model) ? "remote" : model.device;
}

export function shownRuntime(model: Pick<ModelInfo, "source" | "runtime">): string {
  return isRemote(model) ? "remote" : model.runtime;
}

/** `remote · remote · gpu-node:8000`, in place of `cpu · onnx-genai · 270 MB`. */
export function remoteDescription(model: Pick<ModelInfo, "source">): string {
  let host = remoteUrl(model) ?? "";
  try {
    host = new URL(host).host;
  } catch {
    // not a URL: shown as it is
  }
  return `remote · remote · ${host}`;
}

/** The tree item's context tokens plus `remote` (Detach shows, Delete does not). */
export function withRemoteContext(context: string, model: Pick<ModelInfo, "source">): string {
  return isRemote(model) ? `${context} remote` : context;
}

/** Why the text is not a deployment URL, as a key the command words; undefined when it is one. */
export function urlProblem(text: string): "empty" | "scheme" | undefined {
  const value = text.trim();
  if (!value) {
    return "empty";
  }
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:" ? undefined : "scheme";
  } catch {
    return "scheme";
  }
}

/** An attachment name is empty (the engine picks one) or follows the registration rule. */
export function nameOk(text: string): boolean {
  return text.trim() === "" || NAME.test(text.trim());
}
