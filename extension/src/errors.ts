/**
 * Turns engine errors into messages for the user (the engine's message plus its hint). The user's
 * own cancellations (JSON-RPC -32800, answered to $/cancelRequest) stay silent; a generation the
 * engine stopped (an unload, a shutdown: kind "cancelled") is shown with its reason.
 */

import { ResponseError } from "vscode-jsonrpc";

/** LSP's RequestCancelled: the reply to the client's own $/cancelRequest. */
const REQUEST_CANCELLED = -32800;

export function isCancellation(err: unknown): boolean {
  if (err instanceof ResponseError) {
    return err.code === REQUEST_CANCELLED;
  }
  return err instanceof Error && (err.name === "Canceled" || err.message === "Canceled");
}

/** The message to show, or undefined for a cancellation. */
export function errorMessage(err: unknown): string | undefined {
  if (isCancellation(err)) {
    return undefined;
  }
  if (err instanceof ResponseError) {
    const data = err.data as { hint?: string; reason?: string } | undefined;
    const why = data?.reason && !err.message.includes(data.reason) ? ` (${data.reason})` : "";
    return data?.hint ? `${err.message}${why} ${data.hint}` : `${err.message}${why}`;
  }
  return err instanceof Error ? err.message : String(err);
}
