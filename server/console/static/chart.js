// @ts-check
// A small line chart in SVG over a rolling window of samples (one a second from the live
// stats stream).

const SVG = "http://www.w3.org/2000/svg";

/** A rolling series drawn as a line chart with its latest value. */
export class Sparkline {
  /**
   * @param {string} title
   * @param {(value: number) => string} format
   * @param {number} [capacity] samples kept (seconds of history)
   */
  constructor(title, format, capacity = 120) {
    /** @type {number[]} */
    this.values = [];
    this.capacity = capacity;
    this.format = format;
    this.element = document.createElement("figure");
    this.element.className = "chart";
    const caption = document.createElement("figcaption");
    this.label = document.createElement("span");
    this.label.textContent = title;
    this.current = document.createElement("strong");
    this.current.textContent = "–";
    caption.append(this.label, this.current);
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.setAttribute("viewBox", "0 0 240 60");
    this.svg.setAttribute("preserveAspectRatio", "none");
    this.svg.setAttribute("role", "img");
    this.svg.setAttribute("aria-label", title);
    this.path = document.createElementNS(SVG, "polyline");
    this.svg.append(this.path);
    this.element.append(caption, this.svg);
  }

  /** @param {number} value */
  push(value) {
    this.values.push(Number.isFinite(value) ? value : 0);
    if (this.values.length > this.capacity) this.values.shift();
    this.current.textContent = this.format(value);
    this.draw();
  }

  draw() {
    const max = Math.max(...this.values, 1e-9);
    const step = 240 / Math.max(this.capacity - 1, 1);
    const offset = (this.capacity - this.values.length) * step;
    const points = this.values.map((value, index) => `${(offset + index * step).toFixed(1)},${(58 - (value / max) * 54).toFixed(1)}`);
    this.path.setAttribute("points", points.join(" "));
  }
}
