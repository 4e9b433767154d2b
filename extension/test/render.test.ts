import { test } from "node:test";
import assert from "node:assert/strict";
import { escapeHtml, renderMarkdown } from "../src/markdown";
import { editTokenBudget, fullLineSpan, previewText } from "../src/diff";
import { latencyBreakdown, lineChart, niceMax } from "../src/webview/chart";
import { isFromPlayground, sameSession, sanitizeSettings } from "../src/webview/messages";
import { contentSecurityPolicy } from "../src/csp";

test("markdown is escaped first: no raw HTML, scripts or links get through", () => {
  const html = renderMarkdown('<script>alert(1)</script> **bold** [x](javascript:alert(1)) <img src=x onerror=alert(1)>');
  assert.ok(!html.includes("<script"));
  assert.ok(!html.includes("<img"));
  assert.ok(!/href=/.test(html));
  assert.ok(html.includes("<strong>bold</strong>"));
  assert.equal(escapeHtml(`"'&<>`), "&quot;&#39;&amp;&lt;&gt;");
});

test("markdown renders code fences, lists, headings and inline code", () => {
  const html = renderMarkdown("# Title\n\n- a\n- `b<c>`\n\n```py\nx = 1 < 2\n```\n\n1. one\n2. two");
  assert.match(html, /<h3>Title<\/h3>/);
  assert.match(html, /<ul><li>a<\/li><li><code>b&lt;c&gt;<\/code><\/li><\/ul>/);
  assert.match(html, /<pre><code data-lang="py">x = 1 &lt; 2<\/code><\/pre>/);
  assert.match(html, /<ol><li>one<\/li><li>two<\/li><\/ol>/);
});

test("an unterminated fence (mid-stream) still renders as code", () => {
  assert.match(renderMarkdown("```js\nlet a"), /<pre><code data-lang="js">let a<\/code><\/pre>/);
});

test("preview text drops code fences and trailing newlines while streaming", () => {
  assert.equal(previewText("``"), "");
  assert.equal(previewText("```python\ndef f():\n"), "def f():");
  assert.equal(previewText("```python\ndef f():\n    pass\n```\n"), "def f():\n    pass");
  assert.equal(previewText("plain\r\ntext\n\n"), "plain\ntext");
});

test("a selection ending at column 0 leaves that line out", () => {
  assert.deepEqual(fullLineSpan(2, 5, 0), { first: 2, last: 4 });
  assert.deepEqual(fullLineSpan(2, 5, 3), { first: 2, last: 5 });
  assert.deepEqual(fullLineSpan(2, 2, 0), { first: 2, last: 2 });
});

test("charts: nice axis maxima, scrolling layout, gaps for missing values", () => {
  assert.equal(niceMax([0.3]), 1);
  assert.equal(niceMax([130]), 200);
  assert.equal(niceMax([240]), 250);
  assert.equal(niceMax([4100]), 5000);
  const g = lineChart([50, null, 100], 100, 50, 3, 1);
  assert.equal(g.yMax, 100);
  assert.equal(g.path, "M0 25 M100 0");
  assert.equal(g.dots.length, 2);
  const right = lineChart([10], 100, 50, 5, 10);
  assert.deepEqual(right.dots, [{ x: 100, y: 0 }], "the newest value sits at the right edge");
  assert.equal(lineChart([], 100, 50, 5).path, "");
});

test("latency breakdown: queue, load, prefill and decode add up to the total", () => {
  const b = latencyBreakdown({ queueMs: 5, loadMs: 400, ttftMs: 460, totalMs: 900 });
  assert.deepEqual(b, { queue: 5, load: 400, prefill: 55, decode: 440 });
  assert.equal(b.queue + b.load + b.prefill + b.decode, 900);
  assert.deepEqual(latencyBreakdown({ queueMs: 0, loadMs: 0, ttftMs: null, totalMs: 30 }), { queue: 0, load: 0, prefill: 30, decode: 0 });
});

test("webview messages are checked and settings clamped", () => {
  const s = { model: "m", system: "", temperature: 0.7, topP: 0.9, maxTokens: 64 };
  assert.ok(isFromPlayground({ type: "send", text: "hi", settings: s }));
  assert.ok(!isFromPlayground({ type: "send", text: 1, settings: s }));
  assert.ok(!isFromPlayground({ type: "eval", code: "x" }));
  assert.ok(!isFromPlayground(null));
  assert.deepEqual(sanitizeSettings({ ...s, temperature: 9, topP: 0, maxTokens: Number.NaN }), { ...s, temperature: 2, topP: 0.01, maxTokens: 512 });
  assert.ok(sameSession(s, { ...s }));
  assert.ok(!sameSession(s, { ...s, temperature: 0.1 }));
});

test("the webview CSP allows no remote resources and only nonce scripts", () => {
  const csp = contentSecurityPolicy("https://x.vscode-cdn.net", "abc");
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'nonce-abc'/);
  assert.ok(!csp.includes("unsafe-inline"));
  assert.ok(!csp.includes("unsafe-eval"));
  assert.ok(!/https?:\/\/\*/.test(csp));
});

test("a loose list (blank lines between items) stays one list", () => {
  assert.equal(renderMarkdown("1. a\n\n2. b\n\n3. c").match(/<ol>/g)?.length, 1);
  assert.equal(renderMarkdown("- a\n\n- b\n\ntext").match(/<ul>/g)?.length, 1);
});

test("edit budget grows with the selection and stays bounded", () => {
  assert.equal(editTokenBudget(""), 64);
  assert.ok(editTokenBudget("x".repeat(350)) === 264);
  assert.equal(editTokenBudget("x".repeat(100000)), 2048);
});
