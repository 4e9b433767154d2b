/** Typed messages between the extension and its webviews (both sides import these types). */

import type { RequestTelemetry, TelemetrySample } from "../protocol/generated";

export interface PlaygroundSettings {
  model: string;
  system: string;
  temperature: number;
  topP: number;
  maxTokens: number;
}

export interface ModelChoice {
  id: string;
  label: string;
  loaded: boolean;
}

export interface TurnStats {
  ttftMs?: number | null;
  tps?: number | null;
  tokens: number;
  finishReason: string;
}

/** Extension → playground webview. */
export type ToPlayground =
  | { type: "init"; models: ModelChoice[]; settings: PlaygroundSettings }
  | { type: "models"; models: ModelChoice[] }
  | { type: "userMessage"; html: string }
  | { type: "answerStart" }
  | { type: "answerDelta"; html: string; tokens: number }
  | { type: "answerEnd"; html: string; stats?: TurnStats; error?: string; cancelled?: boolean }
  | { type: "context"; tokens: number; contextLength: number }
  | { type: "cleared"; notice?: string }
  | { type: "prefill"; text: string };

/** Playground webview → extension. */
export type FromPlayground =
  | { type: "ready" }
  | { type: "send"; text: string; settings: PlaygroundSettings }
  | { type: "stop" }
  | { type: "clear" };

/** Extension → performance webview. */
export type ToPerformance =
  | { type: "history"; samples: TelemetrySample[]; requests: RequestTelemetry[] }
  | { type: "sample"; sample: TelemetrySample }
  | { type: "request"; request: RequestTelemetry }
  /** Which process the data comes from, in words. */
  | { type: "source"; text: string }
  /** Model id → the label the views give it. */
  | { type: "names"; names: Record<string, string> };

/** Performance webview → extension. */
export type FromPerformance = { type: "ready" };

/** Runtime check of messages arriving from a webview (they cross a trust boundary). */
export function isFromPlayground(value: unknown): value is FromPlayground {
  if (typeof value !== "object" || value === null) {
    return false;
  }
  const m = value as { type?: unknown; text?: unknown; settings?: unknown };
  switch (m.type) {
    case "ready":
    case "stop":
    case "clear":
      return true;
    case "send":
      return typeof m.text === "string" && isSettings(m.settings);
    default:
      return false;
  }
}

function isSettings(value: unknown): value is PlaygroundSettings {
  if (typeof value !== "object" || value === null) {
    return false;
  }
  const s = value as Record<string, unknown>;
  return (
    typeof s.model === "string" &&
    typeof s.system === "string" &&
    typeof s.temperature === "number" &&
    typeof s.topP === "number" &&
    typeof s.maxTokens === "number"
  );
}

/** Clamp sampling values to what the engine accepts. */
export function sanitizeSettings(s: PlaygroundSettings): PlaygroundSettings {
  const clamp = (v: number, lo: number, hi: number, dflt: number): number => (Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : dflt);
  return {
    model: s.model,
    system: s.system,
    temperature: clamp(s.temperature, 0, 2, 0.7),
    topP: clamp(s.topP, 0.01, 1, 1),
    maxTokens: Math.round(clamp(s.maxTokens, 1, 32768, 512)),
  };
}

/** Whether a conversation opened with `a` can go on with `b` (the engine keeps settings per session). */
export function sameSession(a: PlaygroundSettings, b: PlaygroundSettings): boolean {
  return a.model === b.model && a.system === b.system && a.temperature === b.temperature && a.topP === b.topP && a.maxTokens === b.maxTokens;
}
