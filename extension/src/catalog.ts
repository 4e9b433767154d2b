/** Pure view-model logic for the model catalog: grouping, badges and tree item context (unit-tested). */

import type { ModelInfo } from "./protocol/generated";
import { formatBytes } from "./format";

export interface CatalogGroups {
  downloaded: ModelInfo[];
  available: ModelInfo[];
}

export function groupCatalog(models: ModelInfo[]): CatalogGroups {
  const byName = (a: ModelInfo, b: ModelInfo): number => a.alias.localeCompare(b.alias) || a.id.localeCompare(b.id);
  return {
    downloaded: models.filter((m) => m.cached).sort(byName),
    available: models.filter((m) => !m.cached).sort(byName),
  };
}

/** The alias, unless another variant shares it (an int8 and a GGUF build of one model):
 * then the variant's name, so the two rows can be told apart. */
export function treeLabel(model: ModelInfo, all: readonly ModelInfo[]): string {
  const shared = all.some((other) => other.id !== model.id && other.alias === model.alias);
  return shared ? model.id.replace(/:\d+$/, "") : model.alias;
}

/** `cpu · onnx-genai · 270 MB`. */
export function modelDescription(model: ModelInfo): string {
  return `${model.device} · ${model.runtime} · ${formatBytes(model.sizeBytes)}`;
}

/** The fit badge: fits, or why not (the engine's reason). */
export function fitBadge(model: ModelInfo): { fits: boolean; text: string } {
  if (model.runtimeUnavailable) {
    return { fits: false, text: model.runtimeUnavailable };
  }
  return { fits: model.fits, text: model.fitReason };
}

/** Space-separated context tokens that the package.json menus match with `=~`. */
export function contextValue(model: ModelInfo): string {
  const parts = ["model", model.cached ? "downloaded" : "available"];
  if (model.loaded) {
    parts.push("loaded");
  }
  return parts.join(" ");
}

/** The OpenAI-compatible endpoint to copy for a model. */
export function restEndpoint(restUrl: string): string {
  return `${restUrl.replace(/\/+$/, "")}/v1/chat/completions`;
}

/** Ids and aliases of loaded models (what the inline-completion gate matches). */
export function loadedNames(models: ModelInfo[]): string[] {
  const out: string[] = [];
  for (const m of models) {
    if (m.loaded) {
      out.push(m.id, m.alias, m.name);
    }
  }
  return out;
}
