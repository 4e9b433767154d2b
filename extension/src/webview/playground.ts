/** The playground webview: settings, transcript with streamed Markdown, Send/Stop/Clear. */

import type { FromPlayground, ModelChoice, PlaygroundSettings, ToPlayground, TurnStats } from "./messages";
import { byId, el, format, strings, vscodeApi } from "./dom";

const S = strings();
const post = (m: FromPlayground): void => vscodeApi.postMessage(m);

const model = byId<HTMLSelectElement>("model");
const system = byId<HTMLTextAreaElement>("system");
const temperature = byId<HTMLInputElement>("temperature");
const topP = byId<HTMLInputElement>("topP");
const maxTokens = byId<HTMLInputElement>("maxTokens");
const transcript = byId<HTMLElement>("transcript");
const composer = byId<HTMLFormElement>("composer");
const message = byId<HTMLTextAreaElement>("message");
const send = byId<HTMLButtonElement>("send");
const stop = byId<HTMLButtonElement>("stop");
const clear = byId<HTMLButtonElement>("clear");
const context = byId<HTMLElement>("context");

let current: { body: HTMLElement; turn: HTMLElement } | undefined;

function settings(): PlaygroundSettings {
  return {
    model: model.value,
    system: system.value,
    temperature: Number(temperature.value),
    topP: Number(topP.value),
    maxTokens: Number(maxTokens.value),
  };
}

function setModels(models: ModelChoice[], selected?: string): void {
  const keep = selected ?? model.value;
  model.replaceChildren();
  if (models.length === 0) {
    const o = el("option", undefined, S.noModels);
    o.value = "";
    model.append(o);
  }
  for (const m of models) {
    const o = el("option", undefined, m.label);
    o.value = m.id;
    model.append(o);
  }
  if (models.some((m) => m.id === keep)) {
    model.value = keep;
  }
}

function turn(role: "user" | "assistant", html: string): { body: HTMLElement; turn: HTMLElement } {
  const t = el("article", `turn ${role}`);
  t.setAttribute("aria-label", role === "user" ? S.you : S.assistant);
  t.append(el("div", "who", role === "user" ? S.you : S.assistant));
  const body = el("div", "body");
  body.innerHTML = html; // sanitised by the extension's renderer: escaped text, fixed tags only
  t.append(body);
  transcript.append(t);
  transcript.scrollTop = transcript.scrollHeight;
  return { body, turn: t };
}

function busy(on: boolean): void {
  send.disabled = on;
  stop.disabled = !on;
  transcript.setAttribute("aria-busy", on ? "true" : "false");
}

function statsLine(stats: TurnStats): string {
  const parts: string[] = [];
  if (stats.ttftMs !== undefined && stats.ttftMs !== null) {
    parts.push(`${S.ttft} ${Math.round(stats.ttftMs)} ms`);
  }
  if (stats.tps !== undefined && stats.tps !== null) {
    parts.push(`${stats.tps.toFixed(1)} ${S.tps}`);
  }
  parts.push(`${stats.tokens} ${S.tokens}`);
  if (stats.finishReason === "length") {
    parts.push(S.truncated);
  }
  return parts.join(" · ");
}

window.addEventListener("message", (event: MessageEvent<ToPlayground>) => {
  const msg = event.data;
  switch (msg.type) {
    case "init":
      setModels(msg.models, msg.settings.model);
      system.value = msg.settings.system;
      temperature.value = String(msg.settings.temperature);
      topP.value = String(msg.settings.topP);
      maxTokens.value = String(msg.settings.maxTokens);
      message.focus();
      break;
    case "models":
      setModels(msg.models);
      break;
    case "userMessage":
      turn("user", msg.html);
      break;
    case "answerStart":
      current = turn("assistant", "");
      current.turn.classList.add("streaming");
      current.body.setAttribute("aria-busy", "true");
      current.body.textContent = S.thinking;
      busy(true);
      break;
    case "answerDelta":
      if (current) {
        current.body.innerHTML = msg.html;
        transcript.scrollTop = transcript.scrollHeight;
      }
      break;
    case "answerEnd": {
      const target = current ?? turn("assistant", "");
      target.body.innerHTML = msg.html;
      target.body.removeAttribute("aria-busy");
      target.turn.classList.remove("streaming");
      if (msg.stats) {
        target.turn.append(el("div", "stats", statsLine(msg.stats)));
      }
      if (msg.cancelled) {
        target.turn.append(el("div", "stats", S.stopped));
      }
      if (msg.error) {
        const e = el("div", "error", `${S.error}: ${msg.error}`);
        e.setAttribute("role", "alert");
        target.turn.append(e);
      }
      current = undefined;
      busy(false);
      transcript.scrollTop = transcript.scrollHeight;
      break;
    }
    case "context":
      context.textContent = format(S.contextUsage, msg.tokens, msg.contextLength);
      break;
    case "cleared":
      transcript.replaceChildren();
      context.textContent = "";
      current = undefined;
      busy(false);
      if (msg.notice) {
        transcript.append(el("p", "notice", msg.notice));
      }
      break;
    case "prefill":
      message.value = msg.text + (message.value ? `\n\n${message.value}` : "");
      message.focus();
      message.setSelectionRange(message.value.length, message.value.length);
      break;
  }
});

composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = message.value;
  if (!text.trim() || send.disabled) {
    return;
  }
  message.value = "";
  post({ type: "send", text, settings: settings() });
});
message.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    composer.requestSubmit();
  } else if (e.key === "Escape" && !stop.disabled) {
    post({ type: "stop" });
  }
});
stop.addEventListener("click", () => post({ type: "stop" }));
clear.addEventListener("click", () => post({ type: "clear" }));
post({ type: "ready" });
