/** The engine's stderr lines mapped to the output channel's log levels (pure, unit-tested): the
 * engine logs "DATE TIME LEVEL logger: message"; a line without a level (a traceback's body)
 * belongs to the record above it. */

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";

const LEVELS: Record<string, LogLevel> = {
  DEBUG: "debug",
  INFO: "info",
  WARNING: "warn",
  ERROR: "error",
  CRITICAL: "error",
};

const RECORD = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:[,.]\d+)? (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$/;

export interface LogLine {
  level: LogLevel;
  /** The line without the timestamp and level, which the output channel adds itself. */
  text: string;
}

/** Tracks the level of the current record across continuation lines. */
export class EngineLogParser {
  private level: LogLevel = "info";

  parse(line: string): LogLine {
    const m = RECORD.exec(line);
    if (m) {
      this.level = LEVELS[m[1]];
      return { level: this.level, text: m[2] };
    }
    if (line.startsWith("Traceback (most recent call last)")) {
      this.level = "error"; // an uncaught exception, printed outside the logging setup
    }
    return { level: this.level, text: line };
  }
}
