/** Line diff and text helpers for the inline-edit preview (pure, unit-tested). */

export type LineMark = "same" | "changed";

export interface LineDiff {
  /** One mark per original line: kept in the replacement, or removed/changed. */
  original: LineMark[];
  /** One mark per replacement line: unchanged, or added/changed. */
  replacement: LineMark[];
}

export function splitLines(text: string): string[] {
  return text.split(/\r?\n/);
}

/** A longest-common-subsequence diff of two line lists (small inputs: selections). */
export function diffLines(original: string[], replacement: string[]): LineDiff {
  const n = original.length;
  const m = replacement.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = original[i] === replacement[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out: LineDiff = { original: new Array<LineMark>(n).fill("changed"), replacement: new Array<LineMark>(m).fill("changed") };
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (original[i] === replacement[j]) {
      out.original[i] = "same";
      out.replacement[j] = "same";
      i++;
      j++;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) {
      i++;
    } else {
      j++;
    }
  }
  return out;
}

/** The streamed replacement as it should be previewed: an opening code fence (and a closing one,
 * once complete) removed, trailing newlines dropped. */
export function previewText(streamed: string): string {
  let text = streamed.replace(/\r\n/g, "\n");
  const open = /^\s*```[\w+-]*[ \t]*\n/.exec(text);
  if (open) {
    text = text.slice(open[0].length);
    text = text.replace(/\n?```\s*$/, "");
  } else if (/^\s*`{1,3}[\w+-]*$/.test(text)) {
    return ""; // the start of a fence: wait for the rest of the line
  }
  return text.replace(/\n+$/, "");
}

/** Full lines covered by a selection: a selection ending at column 0 leaves that line out. */
export function fullLineSpan(startLine: number, endLine: number, endCharacter: number): { first: number; last: number } {
  const last = endLine > startLine && endCharacter === 0 ? endLine - 1 : endLine;
  return { first: startLine, last };
}

/** Max tokens for rewriting `original`: about twice its token count (~3.5 characters a token) plus room to add. */
export function editTokenBudget(original: string): number {
  return Math.min(2048, Math.max(64, Math.ceil((original.length / 3.5) * 2) + 64));
}
