/** When inline completions may ask the engine (pure, unit-tested). */

/** On only when enabled and a model is loaded for it: the configured one, or any loaded model. */
export function inlineAllowed(enabled: boolean, inlineModel: string, loadedIds: string[]): boolean {
  if (!enabled || loadedIds.length === 0) {
    return false;
  }
  if (!inlineModel) {
    return true;
  }
  return loadedIds.includes(inlineModel);
}
