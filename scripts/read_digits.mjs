// Read drawings exactly as the Draw-a-digit page does (book/draw.md): its own JavaScript, its
// own weights. Input on stdin, JSON: {"model": key, "drawings": [{"ink": [...], "height", "width"}]}
// with ink in [0, 1] row by row; output on stdout: one {digit, p, sure} per drawing.
// scripts/read_handwriting.py is the way to call it.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import vm from "node:vm";

const require = createRequire(import.meta.url);
const draw = require("../_static/mnist-draw.js");
const context = { window: {} };
vm.runInNewContext(readFileSync(new URL("../_static/mnist/weights.mjs", import.meta.url), "utf8"), context);
const weights = context.window.MNIST_BOOK_WEIGHTS;

const request = JSON.parse(readFileSync(0, "utf8"));
if (!(request.model in weights) || request.model === "examples") {
  const keys = Object.keys(weights).filter((key) => key !== "examples");
  throw new Error(`no model ${JSON.stringify(request.model)}: choose one of ${keys.join(", ")}`);
}
const model = draw.readModel(weights[request.model]);
const answers = request.drawings.map(({ ink, height, width }) => {
  const image = draw.mnistStyle(Float64Array.from(ink), height, width);
  const { digit, p, sure } = draw.decide(model, draw.forward(model, draw.normalize(image, model.mean, model.std)));
  return { digit, p, sure };
});
process.stdout.write(JSON.stringify(answers));
