// Drives the real engine the way VS Code's language client does (vscode-jsonrpc over stdio):
// initialize, stream a chat with partial results, cancel a second chat, shut down.
// Any stray byte on the engine's stdout breaks the framing and fails this script.
import { spawn } from "node:child_process";
import {
  createMessageConnection,
  StreamMessageReader,
  StreamMessageWriter,
  CancellationTokenSource,
  ProgressType,
} from "vscode-jsonrpc/node.js";

const [python, home, model] = process.argv.slice(2);
const proc = spawn(python, ["-m", "server"], {
  env: { ...process.env, INGOT_HOME: home, INGOT_THREADS: "2" },
  stdio: ["pipe", "pipe", "inherit"],
});
const conn = createMessageConnection(
  new StreamMessageReader(proc.stdout),
  new StreamMessageWriter(proc.stdin),
);
const errors = [];
conn.onError(([err]) => errors.push(String(err && err.message ? err.message : err)));
const ready = new Promise((resolve) => conn.onNotification("ingot/serviceReady", resolve));
const partial = new ProgressType();
conn.listen();

const result = { errors };
try {
  const init = await conn.sendRequest("initialize", {
    processId: process.pid,
    rootUri: null,
    capabilities: { window: { workDoneProgress: true } },
    initializationOptions: { restPort: 0 },
  });
  result.methods = init.capabilities.experimental.ingot.methods.length;
  result.inlineCompletion = Boolean(init.capabilities.inlineCompletionProvider);
  conn.sendNotification("initialized", {});
  result.restUrl = (await ready).url;

  const pieces = [];
  conn.onProgress(partial, "stream-1", (v) => pieces.push(v.text));
  const chat = await conn.sendRequest("ingot/chat", {
    model,
    messages: [{ role: "user", content: "Say hello." }],
    maxTokens: 16,
    temperature: 0,
    partialResultToken: "stream-1",
  });
  result.chatText = chat.text;
  result.streamedText = pieces.join("");
  result.finishReason = chat.finishReason;

  const cts = new CancellationTokenSource();
  let seen = 0;
  conn.onProgress(partial, "stream-2", () => {
    seen += 1;
    if (seen === 3) cts.cancel();
  });
  try {
    await conn.sendRequest(
      "ingot/chat",
      {
        model,
        messages: [{ role: "user", content: "Tell me a very long story." }],
        maxTokens: 1000,
        partialResultToken: "stream-2",
      },
      cts.token,
    );
    result.cancelCode = null;
  } catch (e) {
    result.cancelCode = e.code;
    result.cancelData = e.data;
  }
  await conn.sendRequest("shutdown");
  conn.sendNotification("exit");
  result.exitCode = await new Promise((resolve) => proc.on("exit", resolve));
} catch (e) {
  result.failure = String(e && e.stack ? e.stack : e);
  proc.kill();
}
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(0);
