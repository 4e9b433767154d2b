/** Pure formatting helpers shared by the views, the status bar and the webviews (unit-tested). */

export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) {
    return "—";
  }
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = value >= 100 || unit === 0 ? 0 : 1;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

/** `mm:ss` (or `h:mm:ss`) of a TTL; negative means kept until unloaded. */
export function formatTtl(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) {
    return "—";
  }
  if (seconds < 0) {
    return "∞";
  }
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const pad = (n: number): string => n.toString().padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(sec)}` : `${pad(m)}:${pad(sec)}`;
}

/** Seconds left of a TTL counted down from when it was last reported. */
export function ttlRemaining(reportedSeconds: number, reportedAtMs: number, nowMs: number): number {
  return Math.max(0, reportedSeconds - (nowMs - reportedAtMs) / 1000);
}

export function formatTps(tps: number | null | undefined): string {
  if (tps === null || tps === undefined || !Number.isFinite(tps)) {
    return "—";
  }
  return `${tps.toFixed(1)} tok/s`;
}

export function formatMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) {
    return "—";
  }
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

/** Parse a TTL the user typed: seconds, or a duration like `10m`, `1h`, `30s`; `-1`/`forever` keeps it. */
export function parseTtl(input: string): number | undefined {
  const text = input.trim().toLowerCase();
  if (text === "") {
    return undefined;
  }
  if (text === "forever" || text === "keep" || text === "∞") {
    return -1;
  }
  const match = /^(-?\d+(?:\.\d+)?)\s*(s|m|h)?$/.exec(text);
  if (!match) {
    return undefined;
  }
  const value = Number(match[1]);
  const factor = match[2] === "h" ? 3600 : match[2] === "m" ? 60 : 1;
  if (value < 0) {
    return -1;
  }
  return Math.round(value * factor);
}

type EngineStateName = "stopped" | "starting" | "running" | "restarting" | "failed";

/** What the status bar item shows for an engine state, and what a click on it does. */
export interface StatusView {
  icon: string;
  /** Red background: the engine failed. */
  error: boolean;
  /** Labels of the loaded models (running only). */
  models?: string[];
  /** The last answer's decode rate, only while its model is still loaded. */
  tps?: number;
  /** performance: the performance view; log: the engine log (while it starts); fix: what to do about it. */
  action: "performance" | "log" | "fix";
  /** Instead of the engine state: the engine is being set up, or is not set up yet. */
  label?: "settingUp" | "notSetUp";
}

export function statusView(
  state: EngineStateName,
  loaded: readonly { id: string; label: string }[],
  last: { modelId: string; tps: number } | undefined,
  setup: "none" | "missing" | "running" = "none",
): StatusView {
  // Not set up yet (or being set up) is a first run, not a failure: no red, and a click offers Set up Ingot.
  if (setup === "running") {
    return { icon: "$(loading~spin)", error: false, action: "log", label: "settingUp" };
  }
  if (setup === "missing" && state !== "running") {
    return { icon: "$(tools)", error: false, action: "fix", label: "notSetUp" };
  }
  switch (state) {
    case "running":
      return {
        icon: "$(circuit-board)",
        error: false,
        models: loaded.map((m) => m.label),
        tps: last && loaded.some((m) => m.id === last.modelId) ? last.tps : undefined,
        action: "performance",
      };
    case "starting":
    case "restarting":
      return { icon: "$(loading~spin)", error: false, action: "log" };
    case "failed":
      return { icon: "$(error)", error: true, action: "fix" };
    default:
      return { icon: "$(circle-slash)", error: false, action: "fix" };
  }
}
