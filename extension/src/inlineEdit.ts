/** Inline chat: "Edit Selection" streams the engine's rewrite below the selection as a preview with
 * diff decorations, then Accept (keep the rewrite) or Reject (keep the original), by CodeLens or command. */

import * as crypto from "crypto";
import * as vscode from "vscode";
import { EditPartialResult, EditRequest } from "./protocol/generated";
import type { Engine } from "./engine";
import { diffLines, editTokenBudget, fullLineSpan, previewText, splitLines } from "./diff";
import { errorMessage } from "./errors";

export interface EditArgs {
  /** The instruction; asked for when absent. */
  instruction?: string;
  model?: string;
}

interface Pending {
  editor: vscode.TextEditor;
  uri: string;
  /** Original block: lines first..last. */
  first: number;
  last: number;
  original: string;
  /** Replacement block as inserted below the original: lines last+1 .. last+lines. */
  text: string;
  running: boolean;
  cancel: vscode.CancellationTokenSource;
  applying: Promise<void>;
}

export class InlineEditController implements vscode.CodeLensProvider, vscode.Disposable {
  private pending: Pending | undefined;
  private readonly removed = vscode.window.createTextEditorDecorationType({
    isWholeLine: true,
    backgroundColor: new vscode.ThemeColor("diffEditor.removedLineBackground"),
    overviewRulerColor: new vscode.ThemeColor("editorOverviewRuler.deletedForeground"),
    overviewRulerLane: vscode.OverviewRulerLane.Left,
  });
  private readonly added = vscode.window.createTextEditorDecorationType({
    isWholeLine: true,
    backgroundColor: new vscode.ThemeColor("diffEditor.insertedLineBackground"),
    overviewRulerColor: new vscode.ThemeColor("editorOverviewRuler.addedForeground"),
    overviewRulerLane: vscode.OverviewRulerLane.Left,
  });
  private readonly kept = vscode.window.createTextEditorDecorationType({
    isWholeLine: true,
    opacity: "0.6",
  });
  private readonly lensEmitter = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.lensEmitter.event;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly engine: Engine) {
    this.disposables.push(
      vscode.languages.registerCodeLensProvider({ scheme: "*" }, this),
      vscode.workspace.onDidCloseTextDocument((doc) => {
        if (this.pending && doc.uri.toString() === this.pending.uri) {
          this.clear();
        }
      }),
    );
  }

  /** Whether a preview is waiting for Accept or Reject (or still streaming). */
  get state(): "idle" | "running" | "pending" {
    return this.pending ? (this.pending.running ? "running" : "pending") : "idle";
  }

  async editSelection(args: EditArgs = {}): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      void vscode.window.showInformationMessage(vscode.l10n.t("Open a file and select the text to edit."));
      return;
    }
    if (this.pending) {
      await this.reject();
    }
    const doc = editor.document;
    const sel = editor.selection;
    const span = sel.isEmpty ? { first: sel.active.line, last: sel.active.line } : fullLineSpan(sel.start.line, sel.end.line, sel.end.character);
    const instruction =
      args.instruction ??
      (await vscode.window.showInputBox({
        title: vscode.l10n.t("Ingot: Edit Selection"),
        prompt: vscode.l10n.t("How should the selected lines change?"),
        placeHolder: vscode.l10n.t("e.g. add type hints, fix the bug, translate the comments"),
        ignoreFocusOut: true,
      }));
    if (!instruction) {
      return;
    }
    const range = new vscode.Range(span.first, 0, span.last, doc.lineAt(span.last).text.length);
    const original = doc.getText(range);
    const cancel = new vscode.CancellationTokenSource();
    const pending: Pending = {
      editor,
      uri: doc.uri.toString(),
      first: span.first,
      last: span.last,
      original,
      text: "",
      running: true,
      cancel,
      applying: Promise.resolve(),
    };
    this.pending = pending;
    // Collapse the selection, so that the preview below it is not selected as it streams in.
    editor.selection = new vscode.Selection(span.first, 0, span.first, 0);
    this.updateContext();
    this.decorate();
    const token = crypto.randomUUID();
    let streamed = "";
    let timer: NodeJS.Timeout | undefined;
    const flush = (): void => {
      timer = undefined;
      this.queueReplace(pending, previewText(streamed));
    };
    const sub = this.engine.onProgress(EditPartialResult, token, (delta) => {
      streamed += delta.text;
      timer ??= setTimeout(flush, 60);
    });
    try {
      const result = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Window, title: vscode.l10n.t("Ingot is editing…") },
        () =>
          this.engine.request(
            EditRequest,
            {
              uri: pending.uri,
              range: { start: { line: range.start.line, character: 0 }, end: { line: range.end.line, character: range.end.character } },
              instruction,
              model: args.model,
              // Bound the answer by the selection's size: small models otherwise ramble to the limit.
              maxTokens: editTokenBudget(original),
              // Greedy: an edit should be reproducible (the same selection and instruction give the same rewrite).
              temperature: 0,
              partialResultToken: token,
            },
            cancel.token,
          ),
      );
      if (timer) {
        clearTimeout(timer);
      }
      if (this.pending !== pending) {
        return;
      }
      this.queueReplace(pending, result.text.replace(/\r?\n+$/, ""));
      await pending.applying;
      pending.running = false;
      this.updateContext();
      this.lensEmitter.fire();
    } catch (err) {
      if (timer) {
        clearTimeout(timer);
      }
      if (this.pending === pending) {
        await this.reject();
      }
      const message = errorMessage(err);
      if (message !== undefined && !cancel.token.isCancellationRequested) {
        void vscode.window.showErrorMessage(message);
      }
    } finally {
      sub.dispose();
    }
  }

  /** Replace the preview block with `text` (edits are serialised). */
  private queueReplace(p: Pending, text: string): void {
    p.applying = p.applying.then(async () => {
      if (this.pending !== p || text === p.text) {
        return;
      }
      const doc = p.editor.document;
      const oldLines = p.text === "" ? 0 : splitLines(p.text).length;
      const endOfOriginal = doc.lineAt(p.last).range.end;
      const range = oldLines === 0 ? new vscode.Range(endOfOriginal, endOfOriginal) : new vscode.Range(endOfOriginal, doc.lineAt(p.last + oldLines).range.end);
      const insert = text === "" ? "" : `\n${text}`;
      const ok = await this.applyEdit(doc, (edit) => edit.replace(doc.uri, range, insert));
      if (ok) {
        p.text = text;
        this.decorate();
        this.lensEmitter.fire();
      }
    });
  }

  private async applyEdit(doc: vscode.TextDocument, build: (edit: vscode.WorkspaceEdit) => void): Promise<boolean> {
    const edit = new vscode.WorkspaceEdit();
    build(edit);
    const ok = await vscode.workspace.applyEdit(edit);
    return ok && !doc.isClosed;
  }

  private decorate(): void {
    const p = this.pending;
    if (!p) {
      return;
    }
    const editor = vscode.window.visibleTextEditors.find((e) => e.document.uri.toString() === p.uri) ?? p.editor;
    p.editor = editor;
    const original = splitLines(p.original);
    const replacement = p.text === "" ? [] : splitLines(p.text);
    const diff = diffLines(original, replacement);
    const line = (n: number): vscode.Range => new vscode.Range(n, 0, n, 0);
    const removed: vscode.Range[] = [];
    const kept: vscode.Range[] = [];
    const added: vscode.Range[] = [];
    diff.original.forEach((mark, i) => (mark === "same" ? kept : removed).push(line(p.first + i)));
    diff.replacement.forEach((mark, i) => (mark === "same" ? kept : added).push(line(p.last + 1 + i)));
    editor.setDecorations(this.removed, removed);
    editor.setDecorations(this.added, added);
    editor.setDecorations(this.kept, kept);
  }

  provideCodeLenses(document: vscode.TextDocument): vscode.CodeLens[] {
    const p = this.pending;
    if (!p || document.uri.toString() !== p.uri) {
      return [];
    }
    const at = new vscode.Range(p.first, 0, p.first, 0);
    if (p.running) {
      return [
        new vscode.CodeLens(at, { title: vscode.l10n.t("$(loading~spin) Ingot is editing…"), command: "" }),
        new vscode.CodeLens(at, { title: vscode.l10n.t("Cancel (Escape)"), command: "ingot.edit.cancel" }),
      ];
    }
    return [
      new vscode.CodeLens(at, { title: vscode.l10n.t("$(check) Accept"), tooltip: vscode.l10n.t("Keep the rewrite (Ctrl+Alt+Enter)"), command: "ingot.edit.accept" }),
      new vscode.CodeLens(at, { title: vscode.l10n.t("$(discard) Reject"), tooltip: vscode.l10n.t("Keep the original (Ctrl+Alt+Backspace)"), command: "ingot.edit.reject" }),
    ];
  }

  /** Keep the rewrite: remove the original lines. */
  async accept(): Promise<void> {
    const p = this.pending;
    if (!p) {
      return;
    }
    if (p.running) {
      p.cancel.cancel();
      return;
    }
    await p.applying;
    const doc = p.editor.document;
    const hasText = p.text !== "";
    // Original lines and the newline that joined them to the rewrite (or the whole block if the rewrite is empty).
    const range = hasText
      ? new vscode.Range(p.first, 0, p.last + 1, 0)
      : p.last + 1 < doc.lineCount
        ? new vscode.Range(p.first, 0, p.last + 1, 0)
        : new vscode.Range(p.first, 0, p.last, doc.lineAt(p.last).text.length);
    this.clear();
    await this.applyEdit(doc, (edit) => edit.delete(doc.uri, range));
  }

  /** Keep the original: remove the preview block. */
  async reject(): Promise<void> {
    const p = this.pending;
    if (!p) {
      return;
    }
    p.cancel.cancel();
    await p.applying;
    const doc = p.editor.document;
    this.clear();
    if (p.text !== "" && !doc.isClosed) {
      const lines = splitLines(p.text).length;
      const range = new vscode.Range(doc.lineAt(p.last).range.end, doc.lineAt(p.last + lines).range.end);
      await this.applyEdit(doc, (edit) => edit.delete(doc.uri, range));
    }
  }

  /** Escape: stop a running edit (and drop its preview), or reject a finished one. */
  async cancel(): Promise<void> {
    await this.reject();
  }

  private clear(): void {
    const p = this.pending;
    this.pending = undefined;
    if (p) {
      for (const e of vscode.window.visibleTextEditors.filter((x) => x.document.uri.toString() === p.uri).concat(p.editor)) {
        e.setDecorations(this.removed, []);
        e.setDecorations(this.added, []);
        e.setDecorations(this.kept, []);
      }
    }
    this.updateContext();
    this.lensEmitter.fire();
  }

  private updateContext(): void {
    void vscode.commands.executeCommand("setContext", "ingot.editRunning", this.state === "running");
    void vscode.commands.executeCommand("setContext", "ingot.editPending", this.state === "pending");
  }

  dispose(): void {
    this.pending?.cancel.cancel();
    this.removed.dispose();
    this.added.dispose();
    this.kept.dispose();
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}
