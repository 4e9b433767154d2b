/** Text helpers for the inline-edit preview: the streamed rewrite, the selected lines, the token budget (pure, unit-tested). */

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
