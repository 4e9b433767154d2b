import { test } from "node:test";
import assert from "node:assert/strict";
import { isRemote, nameOk, remoteDescription, remoteUrl, shownDevice, shownRuntime, urlProblem, withRemoteContext } from "../src/remotes";

const remote = { source: "remote:http://gpu-node:8000", device: "cuda" as const, runtime: "vllm" as const };
const local = { source: "build", device: "cpu" as const, runtime: "onnx-genai" as const };

test("an attached deployment's model shows device and runtime `remote` and its host", () => {
  assert.equal(isRemote(remote), true);
  assert.equal(isRemote(local), false);
  assert.equal(remoteUrl(remote), "http://gpu-node:8000");
  assert.equal(remoteUrl(local), undefined);
  assert.equal(shownDevice(remote), "remote");
  assert.equal(shownRuntime(remote), "remote");
  assert.equal(shownDevice(local), "cpu");
  assert.equal(shownRuntime(local), "onnx-genai");
  assert.equal(remoteDescription(remote), "remote · remote · gpu-node:8000");
});

test("remote models carry the `remote` context token (Detach, not Delete)", () => {
  assert.equal(withRemoteContext("model downloaded", remote), "model downloaded remote");
  assert.equal(withRemoteContext("model downloaded", local), "model downloaded");
});

test("the attach inputs are checked before they reach the engine", () => {
  assert.equal(urlProblem(""), "empty");
  assert.equal(urlProblem("gpu-node:8000"), "scheme");
  assert.equal(urlProblem("ftp://gpu-node"), "scheme");
  assert.equal(urlProblem(" https://gpu-node:8000/v1 "), undefined);
  assert.equal(nameOk(""), true);
  assert.equal(nameOk("cluster-1.b"), true);
  assert.equal(nameOk("bad name"), false);
  assert.equal(nameOk("-x"), false);
});
