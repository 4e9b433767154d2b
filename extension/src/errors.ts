/**
 * Turns engine errors into messages for the user (the engine's message plus its hint, each once). The
 * user's own cancellations (JSON-RPC -32800, answered to $/cancelRequest) stay silent; a generation the
 * engine stopped (an unload, a shutdown: kind "cancelled") is shown with its reason. `editProblem` sorts
 * the errors an editor command can fix by `data.kind` (protocol/errors.py), so that the extension can
 * say what to do in its own words and offer the fix as a button.
 */

import { ResponseError } from "vscode-jsonrpc";

/** LSP's RequestCancelled: the reply to the client's own $/cancelRequest. */
const REQUEST_CANCELLED = -32800;

interface RpcError {
  code: number;
  message: string;
  data?: unknown;
}

/** A JSON-RPC error response (a ResponseError, or one from another copy of vscode-jsonrpc). */
function rpcError(err: unknown): RpcError | undefined {
  if (err instanceof ResponseError) {
    return err;
  }
  if (err instanceof Error && typeof (err as Partial<RpcError>).code === "number") {
    return err as Error & RpcError;
  }
  return undefined;
}

export function isCancellation(err: unknown): boolean {
  const rpc = rpcError(err);
  if (rpc) {
    return rpc.code === REQUEST_CANCELLED;
  }
  return err instanceof Error && (err.name === "Canceled" || err.message === "Canceled");
}

/** The engine's error kind (`data.kind`: model_not_loaded, context_length_exceeded, …), if any. */
export function errorKind(err: unknown): string | undefined {
  const data = rpcError(err)?.data as { kind?: unknown } | undefined;
  return typeof data?.kind === "string" ? data.kind : undefined;
}

/** The message to show, or undefined for a cancellation. The engine's message may already end with
 * its hint (and name the reason): each is added only when it is not there yet. */
export function errorMessage(err: unknown): string | undefined {
  if (isCancellation(err)) {
    return undefined;
  }
  const rpc = rpcError(err);
  if (rpc) {
    const data = rpc.data as { hint?: unknown; reason?: unknown } | undefined;
    let message = rpc.message.trim();
    for (const [extra, wrap] of [
      [data?.reason, (s: string) => ` (${s})`],
      [data?.hint, (s: string) => ` ${s}`],
    ] as const) {
      if (typeof extra === "string" && extra.trim() !== "" && !message.includes(extra.trim())) {
        message += wrap(extra.trim());
      }
    }
    return message;
  }
  return err instanceof Error ? err.message : String(err);
}

/** What went wrong for an editor command, in terms of what the user can do about it. */
export type EditProblem =
  /** Nothing is loaded to edit with: load a model. */
  | "noModel"
  /** The edit's model is not downloaded: download it. */
  | "notDownloaded"
  /** The selection (plus room for the answer) does not fit the model's context: select less. */
  | "tooLong"
  /** Too many requests wait: try again shortly. */
  | "busy"
  /** The engine is not running (not set up, crashed, starting): set it up or read its log. */
  | "engineDown";

/** The problem behind `err`, or undefined for a cancellation or an error with no better fix than
 * its own message. `engineRunning`: the engine's state when the error arrived. */
export function editProblem(err: unknown, engineRunning: boolean): EditProblem | undefined {
  if (isCancellation(err)) {
    return undefined;
  }
  switch (errorKind(err)) {
    case "model_not_loaded":
      return "noModel";
    case "model_not_cached":
      return "notDownloaded";
    case "context_length_exceeded":
      return "tooLong";
    case "engine_busy":
      return "busy";
    case undefined:
      return engineRunning ? undefined : "engineDown";
    default:
      return undefined;
  }
}
