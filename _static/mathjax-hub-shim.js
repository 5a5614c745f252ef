/*
 * The Jupyter widget manager the book serves (@jupyter-widgets/html-manager 1.0) typesets widget
 * labels with MathJax 2's `MathJax.Hub.Queue`; the book loads MathJax 3, which has no Hub, so
 * every widget logged a TypeError. Whatever object becomes `window.MathJax` (the configuration
 * first, MathJax 3 itself once loaded) gets a Hub whose Queue asks MathJax 3 to typeset the
 * element. Loaded on every page by Jupyter Book; harmless where there are no widgets.
 */
(function () {
  "use strict";
  function withHub(mathjax) {
    if (mathjax && typeof mathjax === "object" && !mathjax.Hub) {
      Object.defineProperty(mathjax, "Hub", {
        enumerable: false,
        value: {
          Queue: function (job) {
            var element = job && job[2];
            var current = window.MathJax;
            if (current && typeof current.typesetPromise === "function") {
              current.typesetPromise(element ? [element] : undefined).catch(function () {});
            }
          },
        },
      });
    }
    return mathjax;
  }
  var value = withHub(window.MathJax);
  try {
    Object.defineProperty(window, "MathJax", {
      configurable: true,
      enumerable: true,
      get: function () {
        return value;
      },
      set: function (next) {
        value = withHub(next);
      },
    });
  } catch (error) {
    // a page that froze window.MathJax keeps it as it is
  }
})();
