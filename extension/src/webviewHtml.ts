/** The HTML shell of Ingot's webviews: strict CSP (no remote resources, nonce scripts), theme-aware CSS. */

import * as crypto from "crypto";
import * as vscode from "vscode";
import { escapeHtml } from "./markdown";
import { contentSecurityPolicy } from "./csp";

export function nonce(): string {
  return crypto.randomBytes(16).toString("base64");
}


export function webviewHtml(webview: vscode.Webview, extensionUri: vscode.Uri, opts: { title: string; script: string; body: string; strings: Record<string, string> }): string {
  const n = nonce();
  const script = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, "dist", "webview", opts.script));
  const css = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, "media", "webview.css"));
  const strings = escapeHtml(JSON.stringify(opts.strings));
  return `<!DOCTYPE html>
<html lang="${escapeHtml(vscode.env.language)}">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${contentSecurityPolicy(webview.cspSource, n)}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${css.toString()}">
<title>${escapeHtml(opts.title)}</title>
</head>
<body data-strings="${strings}">
${opts.body}
<script nonce="${n}" src="${script.toString()}"></script>
</body>
</html>`;
}
