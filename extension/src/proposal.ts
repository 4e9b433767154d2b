/** The inline-edit proposal as pure text logic (unit-tested): the proposed file, the edited span
 * carried over later changes to the document, and whether a rewrite changes anything. */

/** A half-open range of UTF-16 offsets into a document: [start, end). */
export interface Span {
  start: number;
  end: number;
}

/** One change to a document, as VS Code reports it (offset and length in the text before it). */
export interface TextChange {
  offset: number;
  length: number;
  text: string;
}

/** The whole document with `span` replaced by `rewrite`: what Accept would leave. */
export function proposedText(doc: string, span: Span, rewrite: string): string {
  return doc.slice(0, span.start) + rewrite + doc.slice(span.end);
}

/** The span after `changes` (applied in order, as VS Code applies a change event's list): moved by
 * changes before it, kept by changes after it, undefined once a change touches it. The span is whole
 * lines, so only whole lines may be added at its edges (an insertion at its start that ends with a
 * newline, one at its end that starts with one); anything else at an edge would join text onto its
 * first or last line, which Accept would then merge with the rewrite. */
export function rebaseSpan(span: Span, changes: readonly TextChange[]): Span | undefined {
  let { start, end } = span;
  for (const c of changes) {
    const changeEnd = c.offset + c.length;
    const lineAbove = c.length === 0 && c.offset === start && c.text.endsWith("\n");
    if (changeEnd < start || lineAbove) {
      const delta = c.text.length - c.length;
      start += delta;
      end += delta;
    } else if (c.offset > end || (c.length === 0 && c.offset === end && c.text.startsWith("\n"))) {
      continue;
    } else {
      return undefined;
    }
  }
  return { start, end };
}

/** Whether a rewrite is the original again (line endings and trailing newlines aside). */
export function sameText(original: string, rewrite: string): boolean {
  const norm = (s: string): string => s.replace(/\r\n/g, "\n").replace(/\n+$/, "");
  return norm(original) === norm(rewrite);
}

/** `text` with the document's line ending. */
export function withEol(text: string, eol: "\n" | "\r\n"): string {
  const lf = text.replace(/\r\n/g, "\n");
  return eol === "\n" ? lf : lf.replace(/\n/g, "\r\n");
}
