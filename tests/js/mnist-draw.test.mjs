// The browser page's JavaScript against golden numbers written by Python (tests/test_web.py):
// node --test tests/js/  (MNIST_GOLDEN names the golden file; the test is skipped without it).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import test from "node:test";
import vm from "node:vm";

const require = createRequire(import.meta.url);
const draw = require("../../_static/mnist-draw.js");
const goldenPath = process.env.MNIST_GOLDEN;
const golden = goldenPath ? JSON.parse(readFileSync(goldenPath, "utf8")) : null;
const skip = golden ? false : "MNIST_GOLDEN is not set: run through pytest tests/test_web.py";

function bundle() {
  const context = { window: {} };
  vm.runInNewContext(readFileSync(golden.bundle, "utf8"), context);
  return context.window.MNIST_BOOK_WEIGHTS;
}

test("the forward pass reproduces PyTorch's logits", { skip }, () => {
  const weights = bundle();
  const keys = Object.keys(golden.logits);
  assert.deepEqual(keys, Object.keys(weights).filter((key) => key !== "examples"));
  for (const key of keys) {
    const model = draw.readModel(weights[key]);
    golden.images.forEach((image, n) => {
      const logits = draw.forward(model, image);
      const expected = golden.logits[key][n];
      assert.equal(logits.length, 10);
      const worst = Math.max(...expected.map((v, d) => Math.abs(v - logits[d])));
      assert.ok(worst < 1e-4, `${key}, image ${n}: logits differ by ${worst}`);
    });
  }
});

test("preprocessing gives exactly Python's images", { skip }, () => {
  golden.drawings.forEach(({ ink, height, width, expected }, n) => {
    const image = draw.mnistStyle(Float64Array.from(ink), height, width);
    assert.equal(image.length, 784);
    image.forEach((v, i) => assert.equal(v, expected[i], `drawing ${n}, pixel ${i}`));
  });
  assert.throws(() => draw.mnistStyle(new Float64Array(100), 10, 10), /blank/);
});

test("a broken weights file is refused with a reason", { skip }, () => {
  const good = bundle().mlp;
  const cases = [
    [{ ...good, data: good.data.slice(0, 400) }, /truncated/],
    [{ ...good, format: "something else" }, /not a mnist-book-weights\/1 file/],
    [undefined, /holds no model/],
    [
      { ...good, layers: good.layers.map((l) => (l.type === "linear" ? { ...l, in: l.in + 1 } : l)) },
      /should hold/,
    ],
  ];
  for (const [entry, message] of cases) assert.throws(() => draw.readModel(entry), message);
});

test("the page says 'not sure' exactly where chapter 13's rule does", { skip }, () => {
  const weights = bundle();
  const keys = Object.keys(golden.decisions);
  assert.ok(keys.includes("robust"), "the robust CNN carries a rule");
  let unsure = 0;
  for (const key of keys) {
    const model = draw.readModel(weights[key]);
    golden.decisions[key].forEach(({ digit, sure }, n) => {
      const decision = draw.decide(model, golden.logits[key][n]);
      assert.equal(decision.digit, digit, `${key}, image ${n}`);
      assert.equal(decision.sure, sure, `${key}, image ${n}: p = ${decision.p}`);
      unsure += sure ? 0 : 1;
    });
  }
  assert.ok(unsure > 0, "some of the noisy digits are 'not sure'");
  const plain = draw.readModel(weights.mlp);
  assert.equal(plain.notSureBelow, 0, "a model without a rule is always sure");
  assert.throws(() => draw.readModel({ ...weights.robust, temperature: 0 }), /temperature/);
});
