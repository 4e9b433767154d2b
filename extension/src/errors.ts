/** Turns engine errors into messages for the user (the engine's message plus its hint); cancellations stay silent. */

import { ResponseError } from "vscode-jsonrpc";
import { INGOT_ERROR_CODES } from "./protocol/generated";

export function isCancellation(err: unknown): boolean {
  if (err instanceof ResponseError) {
    return err.code === INGOT_ERROR_CODES.cancelled;
  }
  return err instanceof Error && (err.name === "Canceled" || err.message === "Canceled");
}

/** The message to show, or undefined for a cancellation. */
export function errorMessage(err: unknown): string | undefined {
  if (isCancellation(err)) {
    return undefined;
  }
  if (err instanceof ResponseError) {
    const data = err.data as { hint?: string } | undefined;
    return data?.hint ? `${err.message} ${data.hint}` : err.message;
  }
  return err instanceof Error ? err.message : String(err);
}
