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

type Named = Pick<ModelInfo, "id" | "alias">;

/** The one name a model goes by in the views, the status bar, notifications and pickers: its alias,
 * unless another variant shares it (an int8 and a GGUF build of one model); then the variant's id
 * without its version (`smollm2-135m-instruct-cpu-gguf`), or the whole id if that is shared too. */
export function modelLabel(model: Named, all: readonly Named[]): string {
  const others = all.filter((other) => other.id !== model.id);
  if (!others.some((other) => other.alias === model.alias)) {
    return model.alias;
  }
  const variant = unversioned(model.id);
  return others.some((other) => unversioned(other.id) === variant) ? model.id : variant;
}

/** The label of a model given by id, alias or name (a command's argument), as modelLabel names it;
 * the text itself when the catalog does not know it. */
export function labelOf(idOrName: string, all: readonly (Named & { name?: string })[]): string {
  const byId = all.find((m) => m.id === idOrName);
  if (byId) {
    return modelLabel(byId, all);
  }
  const matches = all.filter((m) => m.alias === idOrName || m.name === idOrName);
  return matches.length === 1 ? modelLabel(matches[0], all) : idOrName;
}

function unversioned(id: string): string {
  return id.replace(/:\d+$/, "");
}

/** `cpu · onnx-genai · 270 MB`. */
export function modelDescription(model: ModelInfo): string {
  // Chat models are the rule; any other task (embeddings) says so first.
  const task = isEmbedding(model) ? `${model.task} · ` : "";
  return `${task}${model.device} · ${model.runtime} · ${formatBytes(model.sizeBytes)}`;
}

/** An embedding model: it turns text into vectors (/v1/embeddings) and cannot chat. */
export function isEmbedding(model: Pick<ModelInfo, "task">): boolean {
  return model.task === "embeddings";
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
  if (isEmbedding(model)) {
    parts.push("embeddings");
  }
  return parts.join(" ");
}

/** The OpenAI-compatible endpoint to copy for a model. */
export function restEndpoint(restUrl: string, embeddings = false): string {
  return `${restUrl.replace(/\/+$/, "")}/v1/${embeddings ? "embeddings" : "chat/completions"}`;
}

/** Ids and aliases of loaded chat models (what the inline-completion gate matches). */
export function loadedNames(models: ModelInfo[]): string[] {
  const out: string[] = [];
  for (const m of models) {
    if (m.loaded && !isEmbedding(m)) {
      out.push(m.id, m.alias, m.name);
    }
  }
  return out;
}
