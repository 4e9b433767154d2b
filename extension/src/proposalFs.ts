/** A read-only file system for edit proposals. A file system rather than a TextDocumentContentProvider:
 * VS Code treats a document it cannot save to a provider as untitled, so Ctrl+S in the proposal asked
 * where to save it; a read-only file that is never dirty makes a save (or auto-save) a no-op. */

import * as vscode from "vscode";

export class ProposalFileSystem implements vscode.FileSystemProvider {
  private readonly emitter = new vscode.EventEmitter<vscode.FileChangeEvent[]>();
  readonly onDidChangeFile = this.emitter.event;

  /** `content(uri)`: the proposal's text, or undefined when there is no such proposal. */
  constructor(private readonly content: (uri: vscode.Uri) => { text: string; mtime: number } | undefined) {}

  /** Tell the editors showing `uri` to read it again. */
  changed(uri: vscode.Uri): void {
    this.emitter.fire([{ type: vscode.FileChangeType.Changed, uri }]);
  }

  private read(uri: vscode.Uri): { text: string; mtime: number } {
    const c = this.content(uri);
    if (!c) {
      throw vscode.FileSystemError.FileNotFound(uri);
    }
    return c;
  }

  stat(uri: vscode.Uri): vscode.FileStat {
    const { text, mtime } = this.read(uri);
    return { type: vscode.FileType.File, ctime: 0, mtime, size: Buffer.byteLength(text, "utf8"), permissions: vscode.FilePermission.Readonly };
  }

  readFile(uri: vscode.Uri): Uint8Array {
    return Buffer.from(this.read(uri).text, "utf8");
  }

  watch(): vscode.Disposable {
    return new vscode.Disposable(() => undefined);
  }

  readDirectory(uri: vscode.Uri): [string, vscode.FileType][] {
    throw vscode.FileSystemError.FileNotADirectory(uri);
  }

  createDirectory(uri: vscode.Uri): void {
    throw vscode.FileSystemError.NoPermissions(uri);
  }

  writeFile(uri: vscode.Uri): void {
    throw vscode.FileSystemError.NoPermissions(uri);
  }

  delete(uri: vscode.Uri): void {
    throw vscode.FileSystemError.NoPermissions(uri);
  }

  rename(uri: vscode.Uri): void {
    throw vscode.FileSystemError.NoPermissions(uri);
  }

  dispose(): void {
    this.emitter.dispose();
  }
}
