// The sidebar toggles a reader sees work.
//
// pydata-sphinx-theme puts its own .primary-toggle and .secondary-toggle in the page header, which
// sphinx-book-theme hides and replaces with its own buttons in the article header. Both themes'
// scripts bind only the first button of each class (document.querySelector): the hidden one. A
// click on any other toggle is handed to that first one, which opens the sidebar as the themes
// intend: hidden or shown beside the page on a wide screen, a drawer on a phone.
document.addEventListener("DOMContentLoaded", () => {
  for (const name of [".primary-toggle", ".secondary-toggle"]) {
    const [bound, ...others] = document.querySelectorAll(name);
    for (const button of others) {
      button.addEventListener("click", (event) => {
        event.preventDefault();
        event.stopImmediatePropagation();
        bound.click();
      });
    }
  }
});

// A box that scrolls sideways (a wide output table or formula) can be reached with the keyboard,
// so that a reader without a mouse can scroll it too (axe: scrollable-region-focusable).
function addTabStops() {
  const boxes = document.querySelectorAll(
    ".bd-article div.cell_output table, .bd-article mjx-container[display='true']");
  for (const box of boxes) {
    if (box.scrollWidth > box.clientWidth && !box.hasAttribute("tabindex")) {
      box.setAttribute("tabindex", "0");
    }
  }
}
document.addEventListener("DOMContentLoaded", addTabStops);
window.addEventListener("resize", addTabStops);
window.addEventListener("load", () => {
  if (window.MathJax && MathJax.startup) {
    MathJax.startup.promise.then(addTabStops);
  }
});

// HiPlot's inline view draws its logo as an <img> without a text alternative: give it one.
new MutationObserver(function () {
  document.querySelectorAll(".hip_thm--light img:not([alt]), .hip_thm--dark img:not([alt])")
    .forEach(function (img) { img.alt = "HiPlot logo"; });
}).observe(document.documentElement, { childList: true, subtree: true });
