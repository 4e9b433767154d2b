/** Inline chat: "Edit Selection" streams the engine's rewrite into a read-only proposal (the whole file
 * with the selected lines rewritten, a file of the `ingot-proposal:` file system) shown in a diff editor against
 * the real document, which the preview never touches: a save writes the original, Reject and Escape
 * leave it byte-identical. Accept replaces the selected lines with the rewrite in one edit, so one Undo
 * restores them; if those lines changed meanwhile, nothing is applied. */

import * as crypto from "crypto";
import * as path from "path";
import * as vscode from "vscode";
import { EditPartialResult, EditRequest } from "./protocol/generated";
import type { Engine } from "./engine";
import { editTokenBudget, fullLineSpan, previewText } from "./diff";
import { EditProblem, editProblem, errorMessage } from "./errors";
import { Span, proposedText, rebaseSpan, sameText, withEol } from "./proposal";
import { ProposalFileSystem } from "./proposalFs";

export interface EditArgs {
  /** The instruction; asked for when absent. */
  instruction?: string;
  model?: string;
}

type Severity = "info" | "warning" | "error";
/** A button: its title and the command it runs. */
type Action = [title: string, command: string];

export const PROPOSAL_SCHEME = "ingot-proposal";
/** How often the proposal (and so the diff editor) is refreshed while the rewrite streams in. */
const REFRESH_MS = 100;

interface Pending {
  doc: vscode.TextDocument;
  uri: string;
  /** The read-only proposal: the document with `span` replaced by `text`. */
  proposal: vscode.Uri;
  column: vscode.ViewColumn | undefined;
  /** The selected lines in the document as it is now (carried over edits elsewhere in it). */
  span: Span;
  original: string;
  /** The rewrite (so far, while running). */
  text: string;
  /** The proposal's text as it was when the proposal ended (its diff editor may still be closing). */
  frozen: string | undefined;
  /** The proposal file's modification time: bumped on every change, so that its editors read it again. */
  mtime: number;
  running: boolean;
  /** Set once the diff editor was asked for; resolves when it is open. */
  showing: Promise<void> | undefined;
  cancel: vscode.CancellationTokenSource;
}

export class InlineEditController implements vscode.CodeLensProvider, vscode.Disposable {
  private pending: Pending | undefined;
  /** The last message shown (for the tests: a toast cannot be read through the API). */
  lastNotice: { severity: Severity; message: string; actions: string[] } | undefined;
  private serial = 0;
  private refreshTimer: NodeJS.Timeout | undefined;
  /** The current proposal and those whose diff editors are still closing, by URI. */
  private readonly proposals = new Map<string, Pending>();
  private readonly fs = new ProposalFileSystem((uri) => {
    const p = this.proposals.get(uri.toString());
    return p && { text: this.textOf(p), mtime: p.mtime };
  });
  private readonly lensEmitter = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.lensEmitter.event;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly engine: Engine) {
    this.disposables.push(
      this.fs,
      this.lensEmitter,
      vscode.workspace.registerFileSystemProvider(PROPOSAL_SCHEME, this.fs, { isCaseSensitive: true, isReadonly: true }),
      vscode.languages.registerCodeLensProvider({ scheme: "*" }, this),
      vscode.workspace.onDidChangeTextDocument((e) => this.documentChanged(e)),
      vscode.workspace.onDidCloseTextDocument((doc) => {
        const p = this.pending;
        if (p && doc.uri.toString() === p.uri) {
          void this.clear(p);
        }
      }),
      // Closing the diff editor by hand is a Reject.
      vscode.window.tabGroups.onDidChangeTabs((e) => {
        const p = this.pending;
        if (p && e.closed.some((t) => isProposalTab(t, p))) {
          p.cancel.cancel();
          this.detach(p);
          this.proposals.delete(p.proposal.toString());
        }
      }),
    );
    this.closeRestored();
  }

  /** Proposals do not outlive the window: close the diff editors a reload restored. */
  closeRestored(): void {
    const stale = vscode.window.tabGroups.all
      .flatMap((g) => g.tabs)
      .filter((t) => t.input instanceof vscode.TabInputTextDiff && t.input.modified.scheme === PROPOSAL_SCHEME && !this.proposals.has(t.input.modified.toString()));
    if (stale.length > 0) {
      void vscode.window.tabGroups.close(stale);
    }
  }

  /** Whether a proposal is waiting for Accept or Reject (or still streaming). */
  get state(): "idle" | "running" | "pending" {
    return this.pending ? (this.pending.running ? "running" : "pending") : "idle";
  }

  /** The proposal's URI while one exists (for the tests). */
  get proposalUri(): vscode.Uri | undefined {
    return this.pending?.proposal;
  }

  /** The text of the proposal at `uri` (for the tests), if there is one. */
  proposalText(uri: vscode.Uri): string | undefined {
    const p = this.proposals.get(uri.toString());
    return p && this.textOf(p);
  }

  /** The document with the selected lines replaced by the rewrite (so far). */
  private textOf(p: Pending): string {
    return p.frozen ?? proposedText(p.doc.getText(), p.span, withEol(p.text, eolOf(p.doc)));
  }

  async editSelection(args: EditArgs = {}): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor || editor.document.uri.scheme === PROPOSAL_SCHEME) {
      this.notify("info", vscode.l10n.t("Open a file and select the text to edit."));
      return;
    }
    if (this.engine.state !== "running") {
      await this.showProblem("engineDown");
      return;
    }
    const doc = editor.document;
    const instruction =
      args.instruction ??
      (await vscode.window.showInputBox({
        title: vscode.l10n.t("Ingot: Edit Selection"),
        prompt: vscode.l10n.t("How should the selected lines change?"),
        placeHolder: vscode.l10n.t("e.g. add type hints, fix the bug, translate the comments"),
        ignoreFocusOut: true,
      }));
    if (!instruction || doc.isClosed) {
      return;
    }
    // The prompt can stay open for a while: the engine may have stopped, another Edit Selection may
    // have started, and the document may have changed. Decide all of that now, after it.
    if (this.engine.state !== "running") {
      await this.showProblem("engineDown");
      return;
    }
    if (this.pending) {
      await this.reject();
    }
    const sel = editor.selection;
    const lines = sel.isEmpty ? { first: sel.active.line, last: sel.active.line } : fullLineSpan(sel.start.line, sel.end.line, sel.end.character);
    if (lines.last >= doc.lineCount) {
      return;
    }
    const range = new vscode.Range(lines.first, 0, lines.last, doc.lineAt(lines.last).text.length);
    const original = doc.getText(range);
    const p: Pending = {
      doc,
      uri: doc.uri.toString(),
      proposal: vscode.Uri.from({
        scheme: PROPOSAL_SCHEME,
        // The file's own name, so that the proposal gets its language (and highlighting).
        path: doc.uri.path.startsWith("/") ? doc.uri.path : `/${doc.uri.path}`,
        query: String(++this.serial),
      }),
      column: editor.viewColumn,
      span: { start: doc.offsetAt(range.start), end: doc.offsetAt(range.end) },
      original,
      text: "",
      frozen: undefined,
      mtime: Date.now(),
      running: true,
      showing: undefined,
      cancel: new vscode.CancellationTokenSource(),
    };
    this.pending = p;
    this.proposals.set(p.proposal.toString(), p);
    this.updateContext();
    this.lensEmitter.fire();
    const token = crypto.randomUUID();
    let streamed = "";
    let sub: vscode.Disposable | undefined;
    try {
      sub = this.engine.onProgress(EditPartialResult, token, (delta) => {
        if (this.pending !== p) {
          return;
        }
        streamed += delta.text;
        p.text = previewText(streamed);
        if (!p.showing && p.text !== "") {
          this.show(p);
        } else {
          this.scheduleRefresh();
        }
      });
      const result = await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: vscode.l10n.t("Ingot is editing…") }, () =>
        this.engine.request(
          EditRequest,
          {
            uri: p.uri,
            range: { start: { line: range.start.line, character: 0 }, end: { line: range.end.line, character: range.end.character } },
            instruction,
            model: args.model,
            // Bound the answer by the selection's size: small models otherwise ramble to the limit.
            maxTokens: editTokenBudget(original),
            // Greedy: an edit should be reproducible (the same selection and instruction give the same rewrite).
            temperature: 0,
            partialResultToken: token,
          },
          p.cancel.token,
        ),
      );
      if (this.pending !== p) {
        return;
      }
      const text = result.text.replace(/\r?\n+$/, "");
      if (sameText(original, text)) {
        await this.clear(p);
        this.notify("info", vscode.l10n.t("The model suggested no changes."));
        return;
      }
      p.text = text;
      p.running = false;
      if (!p.showing) {
        this.show(p);
      }
      this.refreshNow(p);
      this.updateContext();
      this.lensEmitter.fire();
      await p.showing;
    } catch (err) {
      const mine = this.pending === p;
      if (mine) {
        await this.clear(p);
      }
      if (mine && !p.cancel.token.isCancellationRequested) {
        await this.showError(err);
      }
    } finally {
      sub?.dispose();
    }
  }

  /** Keep the rewrite: replace the selected lines with it, in one edit. */
  async accept(): Promise<void> {
    const p = this.pending;
    if (!p || p.running) {
      return;
    }
    const doc = p.doc;
    const range = new vscode.Range(doc.positionAt(p.span.start), doc.positionAt(p.span.end));
    if (doc.isClosed || doc.getText(range) !== p.original) {
      await this.clear(p);
      this.notify("warning", vscode.l10n.t("The selected lines changed, so the edit was not applied. Run Edit Selection again."));
      return;
    }
    const edit = new vscode.WorkspaceEdit();
    edit.replace(doc.uri, range, withEol(p.text, eolOf(doc)));
    this.detach(p);
    // The edit carries the document's version: if it changed since, VS Code refuses it (ok is false).
    const ok = await vscode.workspace.applyEdit(edit);
    await this.close(p, range.start);
    if (!ok) {
      this.notify("warning", vscode.l10n.t("The selected lines changed, so the edit was not applied. Run Edit Selection again."));
    }
  }

  /** Keep the original: close the proposal (the document was never changed). */
  async reject(): Promise<void> {
    const p = this.pending;
    if (!p) {
      return;
    }
    p.cancel.cancel();
    await this.clear(p);
  }

  /** Escape: stop a running edit, or reject a finished one. */
  async cancel(): Promise<void> {
    await this.reject();
  }

  provideCodeLenses(document: vscode.TextDocument): vscode.CodeLens[] {
    const p = this.pending;
    const uri = document.uri.toString();
    if (!p || (uri !== p.uri && uri !== p.proposal.toString())) {
      return [];
    }
    // The text before the selection is the same in both, so the block starts on the same line.
    const line = p.doc.positionAt(p.span.start).line;
    const at = new vscode.Range(line, 0, line, 0);
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

  private show(p: Pending): void {
    const at = p.doc.positionAt(p.span.start);
    const title = vscode.l10n.t("{0} ↔ Ingot's proposal", path.posix.basename(p.doc.uri.path));
    const options: vscode.TextDocumentShowOptions = { viewColumn: p.column, preview: true, selection: new vscode.Range(at, at) };
    p.showing = Promise.resolve(vscode.commands.executeCommand("vscode.diff", p.doc.uri, p.proposal, title, options)).then(
      () => undefined,
      (err: unknown) => this.engine.output.warn(`could not open the edit proposal: ${String(err)}`),
    );
  }

  /** Follow the document: move the proposal with edits elsewhere; drop it when the selected lines change. */
  private documentChanged(e: vscode.TextDocumentChangeEvent): void {
    const p = this.pending;
    if (!p || e.document.uri.toString() !== p.uri || e.contentChanges.length === 0) {
      return;
    }
    const span = rebaseSpan(
      p.span,
      e.contentChanges.map((c) => ({ offset: c.rangeOffset, length: c.rangeLength, text: c.text })),
    );
    if (!span) {
      p.cancel.cancel();
      void this.clear(p);
      this.notify("warning", vscode.l10n.t("The selected lines were edited, so Ingot's proposal was dropped. Run Edit Selection again."));
      return;
    }
    p.span = span;
    this.scheduleRefresh();
    this.lensEmitter.fire();
  }

  private scheduleRefresh(): void {
    this.refreshTimer ??= setTimeout(() => {
      this.refreshTimer = undefined;
      if (this.pending) {
        this.changed(this.pending);
      }
    }, REFRESH_MS);
  }

  private refreshNow(p: Pending): void {
    if (this.refreshTimer) {
      clearTimeout(this.refreshTimer);
      this.refreshTimer = undefined;
    }
    this.changed(p);
  }

  private changed(p: Pending): void {
    p.mtime = Math.max(Date.now(), p.mtime + 1);
    this.fs.changed(p.proposal);
  }

  private async showError(err: unknown): Promise<void> {
    const problem = editProblem(err, this.engine.state === "running");
    if (problem) {
      await this.showProblem(problem);
      return;
    }
    const message = errorMessage(err);
    if (message !== undefined) {
      this.notify("error", message);
    }
  }

  /** The problem in the extension's words, with its fix as a button. */
  private async showProblem(problem: EditProblem): Promise<void> {
    const offer = (message: string, actions: Action[], severity: Severity = "error"): void => this.notify(severity, message, actions);
    switch (problem) {
      case "noModel":
        offer(vscode.l10n.t("No model is loaded for Edit Selection. Load one, then try again."), [[vscode.l10n.t("Load Model"), "ingot.model.load"]]);
        return;
      case "notDownloaded":
        offer(vscode.l10n.t("The model for Edit Selection is not downloaded yet. Download it, then try again."), [[vscode.l10n.t("Download Model"), "ingot.model.download"]]);
        return;
      case "tooLong":
        offer(vscode.l10n.t("The selection is too long for the model's context. Select fewer lines and try again."), [], "warning");
        return;
      case "busy":
        offer(vscode.l10n.t("The Ingot engine is busy with other requests. Try again in a moment."), [], "warning");
        return;
      case "engineDown": {
        const log: Action = [vscode.l10n.t("Show Log"), "ingot.engine.showLog"];
        if (this.engine.state === "starting" || this.engine.state === "restarting") {
          offer(vscode.l10n.t("The Ingot engine is starting. Try again in a moment."), [log], "warning");
          return;
        }
        const commands = await vscode.commands.getCommands(true);
        const fix: Action = commands.includes("ingot.setup")
          ? [vscode.l10n.t("Set up Ingot"), "ingot.setup"]
          : [vscode.l10n.t("Restart Engine"), "ingot.engine.restart"];
        offer(vscode.l10n.t("The Ingot engine is not running, so it cannot edit. Set it up, or see the log for why."), [fix, log]);
        return;
      }
    }
  }

  /** Show a message with buttons that run commands. Not awaited: a toast may stay open. */
  private notify(severity: Severity, message: string, actions: Action[] = []): void {
    this.lastNotice = { severity, message, actions: actions.map((a) => a[0]) };
    const titles = actions.map((a) => a[0]);
    const shown =
      severity === "error"
        ? vscode.window.showErrorMessage(message, ...titles)
        : severity === "warning"
          ? vscode.window.showWarningMessage(message, ...titles)
          : vscode.window.showInformationMessage(message, ...titles);
    void shown.then((choice) => {
      const action = actions.find((a) => a[0] === choice);
      if (action) {
        void vscode.commands.executeCommand(action[1]);
      }
    });
  }

  /** Forget the proposal and close its diff editor. */
  private async clear(p: Pending, at?: vscode.Position): Promise<void> {
    this.detach(p);
    await this.close(p, at ?? p.doc.positionAt(p.span.start));
  }

  private detach(p: Pending): void {
    if (this.pending !== p) {
      return;
    }
    this.pending = undefined;
    p.frozen = this.textOf(p);
    if (this.refreshTimer) {
      clearTimeout(this.refreshTimer);
      this.refreshTimer = undefined;
    }
    this.updateContext();
    this.lensEmitter.fire();
  }

  /** Close the proposal's diff editor; if it had the focus, give it back to the document at `at`. */
  private async close(p: Pending, at: vscode.Position): Promise<void> {
    try {
      await p.showing;
      const tabs = vscode.window.tabGroups.all.flatMap((g) => g.tabs).filter((t) => isProposalTab(t, p));
      if (tabs.length === 0) {
        return;
      }
      const active = tabs.find((t) => t.isActive && t.group.isActive);
      await vscode.window.tabGroups.close(tabs);
      if (active && !p.doc.isClosed) {
        await vscode.window.showTextDocument(p.doc.uri, { viewColumn: active.group.viewColumn, selection: new vscode.Range(at, at) });
      }
    } finally {
      if (this.pending !== p) {
        this.proposals.delete(p.proposal.toString());
      }
    }
  }

  private updateContext(): void {
    void vscode.commands.executeCommand("setContext", "ingot.editRunning", this.state === "running");
    void vscode.commands.executeCommand("setContext", "ingot.editPending", this.state === "pending");
  }

  dispose(): void {
    this.pending?.cancel.cancel();
    if (this.refreshTimer) {
      clearTimeout(this.refreshTimer);
    }
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}

function isProposalTab(tab: vscode.Tab, p: Pending): boolean {
  return tab.input instanceof vscode.TabInputTextDiff && tab.input.modified.toString() === p.proposal.toString();
}

function eolOf(doc: vscode.TextDocument): "\n" | "\r\n" {
  return doc.eol === vscode.EndOfLine.CRLF ? "\r\n" : "\n";
}
