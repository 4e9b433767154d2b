import { test } from "node:test";
import assert from "node:assert/strict";
import { ResponseError } from "vscode-jsonrpc";
import { proposedText, rebaseSpan, sameText, withEol } from "../src/proposal";
import { editProblem, errorKind, errorMessage, isCancellation } from "../src/errors";

const DOC = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n";
// The first two lines, without the newline that ends the second.
const SPAN = { start: 0, end: DOC.indexOf("\n\n") };

test("the proposal is the whole file with the selected lines replaced", () => {
  const p = proposedText(DOC, SPAN, "def add_numbers(a, b):\n    return a + b");
  assert.equal(p, DOC.replace("def add(", "def add_numbers("));
  assert.equal(proposedText(DOC, SPAN, DOC.slice(SPAN.start, SPAN.end)), DOC, "the original again is the file again");
  assert.equal(proposedText("abc", { start: 1, end: 1 }, "X"), "aXbc", "an empty span inserts");
});

test("the span moves with edits before it and stays for edits after it", () => {
  const span = { start: 10, end: 20 };
  assert.deepEqual(rebaseSpan(span, [{ offset: 0, length: 0, text: "abc" }]), { start: 13, end: 23 });
  assert.deepEqual(rebaseSpan(span, [{ offset: 2, length: 5, text: "" }]), { start: 5, end: 15 });
  assert.deepEqual(rebaseSpan(span, [{ offset: 25, length: 3, text: "xyz123" }]), span);
  // Whole lines added at either edge stay outside the span.
  assert.deepEqual(rebaseSpan(span, [{ offset: 10, length: 0, text: "ab\n" }]), { start: 13, end: 23 });
  assert.deepEqual(rebaseSpan(span, [{ offset: 20, length: 0, text: "\nab" }]), span);
  // Several changes apply in order, each to the text the one before left.
  assert.deepEqual(
    rebaseSpan(span, [
      { offset: 30, length: 0, text: "tail" },
      { offset: 0, length: 0, text: "\n\n" },
    ]),
    { start: 12, end: 22 },
  );
});

test("a change inside the span (or across an edge) makes it stale", () => {
  const span = { start: 10, end: 20 };
  // Text typed at the start of its first line or the end of its last (the span is whole lines), or
  // a deletion that joins the line above or below onto it, would be merged into the rewrite.
  assert.equal(rebaseSpan(span, [{ offset: 10, length: 0, text: "ab" }]), undefined);
  assert.equal(rebaseSpan(span, [{ offset: 20, length: 0, text: "ab" }]), undefined);
  assert.equal(rebaseSpan(span, [{ offset: 8, length: 2, text: "" }]), undefined);
  assert.equal(rebaseSpan(span, [{ offset: 20, length: 1, text: "" }]), undefined);
  assert.equal(rebaseSpan({ start: 10, end: 10 }, [{ offset: 10, length: 0, text: "x" }]), undefined, "typing on an empty selected line");
  assert.equal(rebaseSpan(span, [{ offset: 15, length: 0, text: "x" }]), undefined);
  assert.equal(rebaseSpan(span, [{ offset: 12, length: 3, text: "" }]), undefined);
  assert.equal(rebaseSpan(span, [{ offset: 5, length: 6, text: "" }]), undefined);
  assert.equal(rebaseSpan(span, [{ offset: 19, length: 3, text: "yy" }]), undefined);
  assert.equal(rebaseSpan(span, [{ offset: 0, length: 40, text: "everything" }]), undefined);
  assert.equal(
    rebaseSpan(span, [
      { offset: 0, length: 0, text: "abc" },
      { offset: 14, length: 1, text: "" },
    ]),
    undefined,
    "the second change lands inside the moved span",
  );
});

test("an unchanged rewrite is recognised: line endings and trailing newlines aside", () => {
  assert.ok(sameText("a\nb", "a\nb"));
  assert.ok(sameText("a\nb", "a\nb\n\n"));
  assert.ok(sameText("a\r\nb", "a\nb"));
  assert.ok(!sameText("a\nb", "a\nB"));
  assert.ok(!sameText("a\nb", "a\nb  "), "trailing spaces are a change");
  assert.ok(!sameText("a\nb", "a\n\nb"));
});

test("the rewrite takes the document's line ending", () => {
  assert.equal(withEol("a\nb\r\nc", "\r\n"), "a\r\nb\r\nc");
  assert.equal(withEol("a\r\nb\nc", "\n"), "a\nb\nc");
});

const rpc = (code: number, message: string, data?: object): ResponseError<unknown> => new ResponseError(code, message, data);

test("an error's hint and reason are shown once, even when the message already has them", () => {
  // What the engine sends: the hint already appended to the message, and in data.hint as well.
  const both = rpc(-32013, "No model is loaded for editor requests. Load one (ingot/model/load) or set inlineModel.", {
    kind: "model_not_loaded",
    hint: "Load one (ingot/model/load) or set inlineModel.",
  });
  assert.equal(errorMessage(both), "No model is loaded for editor requests. Load one (ingot/model/load) or set inlineModel.");
  assert.equal(errorMessage(rpc(-32016, "Loading failed.", { kind: "load_failed", hint: "See the log." })), "Loading failed. See the log.");
  assert.equal(
    errorMessage(rpc(-32029, "The request was stopped.", { kind: "cancelled", reason: "the model was unloaded", hint: "Load it again." })),
    "The request was stopped. (the model was unloaded) Load it again.",
  );
  assert.equal(errorMessage(rpc(-32029, "Stopped: the model was unloaded.", { kind: "cancelled", reason: "the model was unloaded" })), "Stopped: the model was unloaded.");
  assert.equal(errorMessage(rpc(-32000, "Boom.")), "Boom.");
  assert.equal(errorMessage(new Error("plain")), "plain");
  assert.equal(errorMessage(rpc(-32800, "Request cancelled")), undefined, "the user's own cancel is silent");
});

test("a JSON-RPC error from another copy of vscode-jsonrpc is read the same way", () => {
  const foreign = Object.assign(new Error("No model is loaded. Load one."), { code: -32013, data: { kind: "model_not_loaded", hint: "Load one." } });
  assert.equal(errorKind(foreign), "model_not_loaded");
  assert.equal(errorMessage(foreign), "No model is loaded. Load one.");
  assert.ok(isCancellation(Object.assign(new Error("x"), { code: -32800 })));
});

test("edit errors are sorted by data.kind into what the user can do", () => {
  const kind = (k: string): ResponseError<unknown> => rpc(-32000, "m", { kind: k });
  assert.equal(editProblem(kind("model_not_loaded"), true), "noModel");
  assert.equal(editProblem(kind("model_not_cached"), true), "notDownloaded");
  assert.equal(editProblem(kind("context_length_exceeded"), true), "tooLong");
  assert.equal(editProblem(kind("engine_busy"), true), "busy");
  assert.equal(editProblem(kind("generation_failed"), true), undefined, "shown with its own message");
  assert.equal(editProblem(kind("model_not_loaded"), false), "noModel", "the kind wins over the engine's state");
  // No kind: a connection that closed, or the extension's own "not running" error.
  assert.equal(editProblem(new Error("The Ingot engine is not running."), false), "engineDown");
  assert.equal(editProblem(rpc(-32097, "Connection is closed."), false), "engineDown");
  assert.equal(editProblem(new Error("odd"), true), undefined);
  assert.equal(editProblem(rpc(-32800, "Request cancelled"), false), undefined, "a cancel is never a problem");
});
