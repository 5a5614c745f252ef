/*
 * "Draw a digit" (book/draw.md): the book's own models, read in the browser.
 *
 * The forward pass is chapter 05's layer functions (Linear, ReLU) and chapter 09's convolution,
 * written out on the folded float32 weights that chapter 12 exports; the preprocessing mirrors
 * helpers/inference.py's `mnist_style` sum for sum. No framework and no server: the weights come
 * from _static/mnist/weights.mjs, a plain script, so the page also works from a copy of the
 * built book opened from disk. Jupyter Book loads this file on every page; it acts only where an
 * element with id "mnist-draw" exists. Node's test runner imports the same functions
 * (tests/js/mnist-draw.test.mjs).
 */
(function (root) {
  "use strict";

  const FORMAT = "mnist-book-weights/1";
  const SIZE = 28;
  const BOX = 20;

  // ---------------------------------------------------------------------------------------
  // Weights
  // ---------------------------------------------------------------------------------------

  function decodeBase64(text) {
    if (typeof atob === "function") {
      const binary = atob(text);
      const bytes = new Uint8Array(binary.length);
      for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
      return bytes;
    }
    return new Uint8Array(Buffer.from(text, "base64"));
  }

  // A model from its exported entry ({...header, data: base64}): checked, with its floats.
  function readModel(entry) {
    if (!entry || typeof entry !== "object") throw new Error("the weights file holds no model");
    if (entry.format !== FORMAT) {
      throw new Error(`not a ${FORMAT} file (format: ${JSON.stringify(entry.format)})`);
    }
    const bytes = decodeBase64(entry.data || "");
    if (bytes.length !== 4 * entry.floats) {
      throw new Error(
        `expected ${4 * entry.floats} bytes of weights, got ${bytes.length}: the file is truncated`
      );
    }
    const floats = new Float32Array(entry.floats);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    for (let i = 0; i < entry.floats; i++) floats[i] = view.getFloat32(4 * i, true);
    entry.layers.forEach((layer, i) => checkLayer(layer, i, entry.floats));
    const temperature = entry.temperature === undefined ? 1 : entry.temperature;
    const notSureBelow = entry.not_sure_below === undefined ? 0 : entry.not_sure_below;
    if (!(temperature > 0) || !(notSureBelow >= 0 && notSureBelow < 1)) {
      throw new Error(
        `temperature ${temperature} and not_sure_below ${notSureBelow}: ` +
          "need a temperature above 0 and a threshold from 0 to 1"
      );
    }
    const { name, mean, std, layers } = entry;
    return { name, mean, std, layers, floats, temperature, notSureBelow };
  }

  function checkLayer(layer, index, total) {
    const sizes = {
      linear: () => layer.out * layer.in,
      conv2d: () => layer.out * layer.in * layer.kernel * layer.kernel,
    };
    if (layer.type === "relu" || layer.type === "flatten") return;
    if (!(layer.type in sizes)) throw new Error(`layer ${index}: unknown type ${layer.type}`);
    const parts = { weight: sizes[layer.type](), bias: layer.out };
    for (const [part, expected] of Object.entries(parts)) {
      const where = layer[part];
      if (!where || where.length !== expected || where.offset + where.length > total) {
        throw new Error(
          `layer ${index} (${layer.type}): its ${part} should hold ${expected} numbers ` +
            `within the file's ${total}`
        );
      }
    }
  }

  // ---------------------------------------------------------------------------------------
  // The forward pass (float64 sums of float32 weights)
  // ---------------------------------------------------------------------------------------

  // y = x W^T + b, one output feature at a time (chapter 05's Linear layer).
  function linear(x, layer, floats) {
    const w = layer.weight.offset;
    const b = layer.bias.offset;
    const y = new Float64Array(layer.out);
    for (let o = 0; o < layer.out; o++) {
      let sum = floats[b + o];
      const row = w + o * layer.in;
      for (let i = 0; i < layer.in; i++) sum += floats[row + i] * x[i];
      y[o] = sum;
    }
    return y;
  }

  // The sum over windows of section 9.1, for every filter and position; x is (C, H, W).
  function conv2d(x, height, width, layer, floats) {
    const { kernel: k, stride: s, padding: p } = layer;
    const outH = Math.floor((height + 2 * p - k) / s) + 1;
    const outW = Math.floor((width + 2 * p - k) / s) + 1;
    const y = new Float64Array(layer.out * outH * outW);
    for (let o = 0; o < layer.out; o++) {
      const bias = floats[layer.bias.offset + o];
      for (let i = 0; i < outH; i++) {
        for (let j = 0; j < outW; j++) {
          let sum = bias;
          for (let c = 0; c < layer.in; c++) {
            const filter = layer.weight.offset + ((o * layer.in + c) * k) * k;
            for (let u = 0; u < k; u++) {
              const row = i * s + u - p;
              if (row < 0 || row >= height) continue;
              for (let v = 0; v < k; v++) {
                const col = j * s + v - p;
                if (col < 0 || col >= width) continue;
                sum += floats[filter + u * k + v] * x[(c * height + row) * width + col];
              }
            }
          }
          y[(o * outH + i) * outW + j] = sum;
        }
      }
    }
    return { y, height: outH, width: outW };
  }

  // Logits for one normalized 28 x 28 image (784 numbers, row by row).
  function forward(model, image) {
    let x = Float64Array.from(image);
    let height = SIZE;
    let width = SIZE;
    for (const layer of model.layers) {
      if (layer.type === "relu") x = x.map((v) => (v > 0 ? v : 0));
      else if (layer.type === "linear") x = linear(x, layer, model.floats);
      else if (layer.type === "conv2d") {
        const out = conv2d(x, height, width, layer, model.floats);
        x = out.y;
        height = out.height;
        width = out.width;
      }
    }
    return x;
  }

  function softmax(logits, temperature = 1) {
    const top = Math.max(...logits);
    const e = Array.from(logits, (v) => Math.exp((v - top) / temperature));
    const total = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / total);
  }

  // Chapter 13's rule: the answer, its calibrated probability, and whether the model is sure
  // (a probability of at least the model's threshold; a model without one is always sure).
  function decide(model, logits) {
    const probs = softmax(logits, model.temperature);
    const digit = probs.indexOf(Math.max(...probs));
    return { probs, digit, p: probs[digit], sure: probs[digit] >= model.notSureBelow };
  }

  // ---------------------------------------------------------------------------------------
  // MNIST-style preprocessing: helpers/inference.py's mnist_style, step for step
  // ---------------------------------------------------------------------------------------

  function overlaps(old, size) {
    const step = old / size;
    const pairs = [];
    for (let i = 0; i < size; i++) {
      const start = i * step;
      const end = (i + 1) * step;
      for (let r = Math.floor(start); r < Math.min(old, Math.ceil(end)); r++) {
        const covered = Math.min(end, r + 1) - Math.max(start, r);
        if (covered > 0) pairs.push([i, r, covered / step]);
      }
    }
    return pairs;
  }

  // Each new pixel the mean of the area it covers; image is height x width, row by row.
  function areaResize(image, height, width, newHeight, newWidth) {
    const out = new Float64Array(newHeight * newWidth);
    const rows = overlaps(height, newHeight);
    const cols = overlaps(width, newWidth);
    for (const [i, r, wr] of rows) {
      for (const [j, c, wc] of cols) {
        out[i * newWidth + j] += wr * wc * image[r * width + c];
      }
    }
    return out;
  }

  const round = (value) => Math.floor(value + 0.5);

  // The pens: brush width in canvas pixels and grey level (helpers/shifts.py's PENS).
  const PENS = { thin: [8, 255], normal: [20, 255], thick: [34, 255], faint: [20, 102] };

  // Ink in [0, 1] (height x width, row by row) -> the 28 x 28 image MNIST would have made.
  function mnistStyle(ink, height, width) {
    let top = height;
    let bottom = -1;
    let left = width;
    let right = -1;
    for (let i = 0; i < height; i++) {
      for (let j = 0; j < width; j++) {
        if (ink[i * width + j] > 0) {
          top = Math.min(top, i);
          bottom = Math.max(bottom, i);
          left = Math.min(left, j);
          right = Math.max(right, j);
        }
      }
    }
    if (bottom < 0) throw new Error("the drawing is blank: there is no ink to centre");
    const cropH = bottom - top + 1;
    const cropW = right - left + 1;
    const crop = new Float64Array(cropH * cropW);
    for (let i = 0; i < cropH; i++) {
      for (let j = 0; j < cropW; j++) crop[i * cropW + j] = ink[(top + i) * width + left + j];
    }
    const scale = BOX / Math.max(cropH, cropW);
    const h = Math.max(1, round(cropH * scale));
    const w = Math.max(1, round(cropW * scale));
    const small = areaResize(crop, cropH, cropW, h, w).map((v) => Math.min(1, Math.max(0, v)));
    const placedTop = Math.floor((SIZE - h) / 2);
    const placedLeft = Math.floor((SIZE - w) / 2);
    const placed = new Float64Array(SIZE * SIZE);
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) placed[(placedTop + i) * SIZE + placedLeft + j] = small[i * w + j];
    }
    let mass = 0;
    let rowSum = 0;
    let colSum = 0;
    for (let i = 0; i < SIZE; i++) {
      for (let j = 0; j < SIZE; j++) {
        const v = placed[i * SIZE + j];
        mass += v;
        rowSum += i * v;
        colSum += j * v;
      }
    }
    let dy = round(SIZE / 2 - rowSum / mass);
    let dx = round(SIZE / 2 - colSum / mass);
    dy = Math.min(Math.max(dy, -placedTop), SIZE - placedTop - h);
    dx = Math.min(Math.max(dx, -placedLeft), SIZE - placedLeft - w);
    const out = new Float64Array(SIZE * SIZE);
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) {
        out[(placedTop + dy + i) * SIZE + placedLeft + dx + j] = small[i * w + j];
      }
    }
    return out;
  }

  function normalize(image, mean, std) {
    return Float64Array.from(image, (v) => (v - mean) / std);
  }

  // ---------------------------------------------------------------------------------------
  // The page
  // ---------------------------------------------------------------------------------------

  function scriptUrl(path) {
    const base = document.documentElement.dataset.content_root || "";
    return base + path;
  }

  function loadWeights(element) {
    return new Promise((resolve, reject) => {
      if (root.MNIST_BOOK_WEIGHTS) return resolve(root.MNIST_BOOK_WEIGHTS);
      const script = document.createElement("script");
      script.src = element.dataset.weights || scriptUrl("_static/mnist/weights.mjs");
      script.onload = () =>
        root.MNIST_BOOK_WEIGHTS
          ? resolve(root.MNIST_BOOK_WEIGHTS)
          : reject(new Error(`${script.src} defines no weights`));
      script.onerror = () => reject(new Error(`${script.src} could not be loaded`));
      document.head.appendChild(script);
    });
  }

  function make(tag, attributes, parent) {
    const node = document.createElement(tag);
    Object.assign(node, attributes || {});
    if (parent) parent.appendChild(node);
    return node;
  }

  // The page's words, in the edition's language (<html lang>: the Chinese edition is zh-CN).
  const TEXT = {
    en: {
      loading: "Loading the models…",
      canvas: "Draw a digit here",
      clear: "Clear",
      sees: "What the model sees (28 × 28)",
      draw: "Draw a digit",
      pick: "Or pick a test digit:",
      ready: "Ready: draw a digit in the black square.",
      pen: "Pen",
      pens: { thin: "thin", normal: "normal", thick: "thick", faint: "faint (grey)" },
      notSure: (digit, p) => `not sure (${digit}? p = ${p})`,
      failed: (message) => `The models could not be loaded: ${message}.`,
      title: (label) => `a test digit labelled ${label}`,
      label: (label) => `label ${label}`,
      model: (key, name) => name,
    },
    zh: {
      loading: "正在加载模型…",
      canvas: "在这里写一个数字",
      clear: "清除",
      sees: "模型看到的图像（28 × 28）",
      draw: "写一个数字",
      pick: "或者选一个测试数字：",
      ready: "准备就绪：在黑色方框里写一个数字。",
      pen: "笔",
      pens: { thin: "细", normal: "常规", thick: "粗", faint: "淡（灰色）" },
      notSure: (digit, p) => `没有把握（${digit}？p = ${p}）`,
      failed: (message) => `模型无法加载：${message}。`,
      title: (label) => `一个标签为 ${label} 的测试数字`,
      label: (label) => `标签 ${label}`,
      model: (key, name) => {
        const names = {
          robust: "稳健的卷积神经网络（第 13 章，会说“没有把握”）",
          robust_mlp: "稳健训练的种子网络（第 13 章，会说“没有把握”）",
          lenet: "本书最终的卷积神经网络（第 10 章）",
          cnn: "第 9 章的卷积神经网络",
          mlp: "种子章节的多层感知机（第 7 章）",
        };
        const accuracy = /([\d.]+)%/.exec(name);
        if (!names[key] || !accuracy) return name;
        return `${names[key]}：测试集准确率 ${accuracy[1]}%`;
      },
    },
  };

  function setUp(element) {
    const lang = (document.documentElement.lang || "en").startsWith("zh") ? "zh" : "en";
    const say = TEXT[lang];
    element.textContent = "";
    const status = make("p", { className: "md-status", textContent: say.loading });
    const row = make("div", { className: "md-row" }, element);
    const left = make("div", { className: "md-column" }, row);
    const canvas = make("canvas", { className: "md-canvas", width: 280, height: 280 }, left);
    canvas.setAttribute("aria-label", say.canvas);
    const buttons = make("div", { className: "md-buttons" }, left);
    const clear = make(
      "button",
      { type: "button", className: "md-clear", textContent: say.clear },
      buttons
    );
    const choice = make("select", { className: "md-model" }, buttons);
    choice.setAttribute("aria-label", "model");
    const pen = make("select", { className: "md-pen" }, buttons);
    pen.setAttribute("aria-label", say.pen);
    for (const [key, label] of Object.entries(say.pens)) {
      make("option", { value: key, textContent: `${say.pen}: ${label}` }, pen);
    }
    pen.value = "normal";
    const right = make("div", { className: "md-column" }, row);
    make("p", { className: "md-caption", textContent: say.sees }, right);
    const small = make("canvas", { className: "md-small", width: SIZE, height: SIZE }, right);
    const answer = make("p", { className: "md-answer", textContent: say.draw }, right);
    const bars = make("div", { className: "md-bars" }, right);
    const barFill = [];
    for (let d = 0; d < 10; d++) {
      const bar = make("div", { className: "md-bar" }, bars);
      const track = make("div", { className: "md-track" }, bar);
      barFill.push(make("div", { className: "md-fill" }, track));
      make("span", { className: "md-digit", textContent: String(d) }, bar);
    }
    element.appendChild(status);
    make("p", { className: "md-caption", textContent: say.pick }, element);
    const examples = make("div", { className: "md-examples" }, element);

    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const blank = () => {
      ctx.fillStyle = "black";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
    };
    blank();
    let models = {};
    let drawing = false;

    function predict() {
      const model = models[choice.value];
      if (!model) return;
      const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      const ink = new Float64Array(canvas.width * canvas.height);
      for (let i = 0; i < ink.length; i++) ink[i] = pixels[4 * i] / 255;
      let image;
      try {
        image = mnistStyle(ink, canvas.height, canvas.width);
      } catch (error) {
        answer.textContent = say.draw;
        barFill.forEach((fill) => (fill.style.height = "0%"));
        return;
      }
      const preview = small.getContext("2d").createImageData(SIZE, SIZE);
      image.forEach((v, i) => {
        preview.data.set([255 * v, 255 * v, 255 * v, 255], 4 * i);
      });
      small.getContext("2d").putImageData(preview, 0, 0);
      const { probs, digit: best, p, sure } = decide(
        model,
        forward(model, normalize(image, model.mean, model.std))
      );
      answer.textContent = sure
        ? `${best} (p = ${p.toFixed(2)})`
        : say.notSure(best, p.toFixed(2));
      answer.dataset.prediction = sure ? String(best) : "not sure";
      answer.dataset.guess = String(best);
      answer.classList.toggle("md-unsure", !sure);
      probs.forEach((p, d) => {
        barFill[d].style.height = `${(100 * p).toFixed(1)}%`;
        barFill[d].classList.toggle("md-best", d === best);
      });
    }

    function position(event) {
      const box = canvas.getBoundingClientRect();
      return [
        ((event.clientX - box.left) * canvas.width) / box.width,
        ((event.clientY - box.top) * canvas.height) / box.height,
      ];
    }
    canvas.addEventListener("pointerdown", (event) => {
      drawing = true;
      canvas.setPointerCapture(event.pointerId);
      const [x, y] = position(event);
      ctx.beginPath();
      ctx.moveTo(x, y);
      ctx.lineTo(x + 0.01, y);
      const [width, grey] = PENS[pen.value];
      ctx.strokeStyle = `rgb(${grey}, ${grey}, ${grey})`;
      ctx.lineWidth = width;
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      ctx.stroke();
      event.preventDefault();
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!drawing) return;
      const [x, y] = position(event);
      ctx.lineTo(x, y);
      ctx.stroke();
      event.preventDefault();
    });
    const stop = () => {
      if (drawing) predict();
      drawing = false;
    };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
    clear.addEventListener("click", () => {
      blank();
      small.getContext("2d").clearRect(0, 0, SIZE, SIZE);
      answer.textContent = say.draw;
      delete answer.dataset.prediction;
      delete answer.dataset.guess;
      answer.classList.remove("md-unsure");
      barFill.forEach((fill) => (fill.style.height = "0%"));
    });
    choice.addEventListener("change", predict);

    loadWeights(element)
      .then((weights) => {
        const keys = Object.keys(weights).filter((key) => key !== "examples");
        if (keys.length === 0) throw new Error("the weights file holds no model");
        models = Object.fromEntries(keys.map((key) => [key, readModel(weights[key])]));
        for (const key of keys) {
          make("option", { value: key, textContent: say.model(key, models[key].name) }, choice);
        }
        showExamples(weights.examples);
        status.textContent = say.ready;
        element.dataset.ready = "true";
      })
      .catch((error) => {
        status.textContent = say.failed(error.message);
        status.classList.add("md-error");
        element.dataset.ready = "error";
      });

    function showExamples(set) {
      const bytes = decodeBase64(set.images);
      set.labels.forEach((label, n) => {
        const button = make("button", { type: "button", className: "md-example" }, examples);
        button.title = say.title(label);
        const thumb = make("canvas", { width: SIZE, height: SIZE }, button);
        const data = thumb.getContext("2d").createImageData(SIZE, SIZE);
        for (let i = 0; i < SIZE * SIZE; i++) {
          const v = bytes[n * SIZE * SIZE + i];
          data.data.set([v, v, v, 255], 4 * i);
        }
        thumb.getContext("2d").putImageData(data, 0, 0);
        make("span", { textContent: say.label(label) }, button);
        button.addEventListener("click", () => {
          blank();
          ctx.imageSmoothingEnabled = false;
          ctx.drawImage(thumb, 0, 0, canvas.width, canvas.height);
          predict();
        });
      });
    }
  }

  const api = {
    FORMAT,
    readModel,
    forward,
    softmax,
    decide,
    PENS,
    areaResize,
    mnistStyle,
    normalize,
    decodeBase64,
  };
  if (typeof module === "object" && module.exports) module.exports = api;
  root.MnistBook = api;
  if (typeof document !== "undefined") {
    const start = () => document.querySelectorAll("#mnist-draw").forEach(setUp);
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
  }
})(typeof window !== "undefined" ? window : globalThis);
