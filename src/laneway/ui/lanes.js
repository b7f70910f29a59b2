// The lanes table: each lane's counters as the lanes stream sends them, and a
// chart of the p99 of its recent waits for a token.
//
// A snapshot's histograms count every wait since the server started. The p99
// of recent waits is computed here, from the difference between the snapshot
// now and the one WINDOW_S before, as Prometheus's rate() does with the same
// buckets: the server keeps no window of its own, so every snapshot stays one
// plain reading and each client picks the window it wants to chart.

const WINDOW_S = 10;
const HISTORY_S = 120;
const SVG = "http://www.w3.org/2000/svg";
const CHART_WIDTH = 360;
const CHART_HEIGHT = 36;

// Quantile q of a cumulative histogram, interpolated inside its bucket, as
// laneway.histogram.HistogramSnapshot.quantile does; null without waits.
export function quantile(histogram, q) {
  if (histogram.count <= 0) return null;
  const rank = q * histogram.count;
  let lowerBound = 0;
  let lowerCount = 0;
  for (let i = 0; i < histogram.bounds.length; i++) {
    const cumulative = histogram.counts[i];
    if (cumulative >= rank) {
      const inBucket = cumulative - lowerCount;
      const fraction = inBucket ? (rank - lowerCount) / inBucket : 1;
      return lowerBound + (histogram.bounds[i] - lowerBound) * fraction;
    }
    lowerBound = histogram.bounds[i];
    lowerCount = cumulative;
  }
  return histogram.bounds[histogram.bounds.length - 1];
}

// What was observed between two cumulative readings of one histogram.
export function histogramBetween(older, newer) {
  // The server restarted in between: its counts began again from zero.
  if (newer.count < older.count) return newer;
  return {
    bounds: newer.bounds,
    counts: newer.counts.map((count, i) => count - older.counts[i]),
    count: newer.count - older.count,
    sum: newer.sum - older.sum,
  };
}

export function formatSeconds(seconds) {
  if (seconds === null) return "–";
  if (seconds < 0.001) return `${(seconds * 1000).toFixed(2)} ms`;
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
}

export class LanesTable {
  constructor(table, modeLabel) {
    this.body = table.tBodies[0];
    this.modeLabel = modeLabel;
    this.rows = new Map();
    // The last WINDOW_S + 1 snapshots of every lane, oldest first.
    this.recent = [];
  }

  update(view) {
    this.modeLabel.textContent = `(${view.mode})`;
    this.recent.push(view.lanes);
    if (this.recent.length > WINDOW_S + 1) this.recent.shift();
    const windowStart = this.recent[0];
    for (const [name, lane] of Object.entries(view.lanes)) {
      const older = windowStart[name];
      const p99 = this.recent.length > 1 && older
        ? quantile(histogramBetween(older.wait_time, lane.wait_time), 0.99)
        : null;
      this.row(name).update(lane, p99);
    }
  }

  row(name) {
    let row = this.rows.get(name);
    if (row === undefined) {
      row = new LaneRow(name);
      this.rows.set(name, row);
      this.body.append(row.element);
    }
    return row;
  }
}

class LaneRow {
  constructor(name) {
    this.element = document.createElement("tr");
    this.element.dataset.lane = name;
    const cell = (text, className) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (className) td.className = className;
      this.element.append(td);
      return td;
    };
    cell(name, "name");
    this.size = cell("", "num size");
    this.running = cell("", "num running");
    this.waiting = cell("", "num waiting");
    this.rejected = cell("", "num rejected");
    this.p99 = cell("", "num p99");
    this.chart = new Chart(cell("", "chart"));
    // p99 of each second's window, oldest first; null where no wait ended.
    this.series = [];
  }

  update(lane, p99) {
    this.size.textContent = lane.size;
    this.running.textContent = lane.running;
    this.waiting.textContent = lane.waiting;
    this.rejected.textContent = lane.rejected;
    this.p99.textContent = formatSeconds(p99);
    this.series.push(p99);
    if (this.series.length > HISTORY_S) this.series.shift();
    this.chart.draw(this.series);
  }
}

// An SVG line, newest point at the right, broken where there is no value, and
// scaled to the highest value shown (written as its label).
class Chart {
  constructor(container) {
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.setAttribute("viewBox", `0 0 ${CHART_WIDTH} ${CHART_HEIGHT}`);
    this.svg.setAttribute("width", CHART_WIDTH);
    this.svg.setAttribute("height", CHART_HEIGHT);
    this.svg.setAttribute("role", "img");
    this.line = document.createElementNS(SVG, "path");
    this.line.setAttribute("class", "line");
    this.label = document.createElementNS(SVG, "text");
    this.label.setAttribute("x", 2);
    this.label.setAttribute("y", 10);
    this.label.setAttribute("class", "label");
    this.svg.append(this.line, this.label);
    container.append(this.svg);
  }

  draw(series) {
    const values = series.filter((value) => value !== null);
    const top = Math.max(...values, 0.001);
    const step = CHART_WIDTH / (HISTORY_S - 1);
    const offset = HISTORY_S - series.length;
    let path = "";
    let drawing = false;
    series.forEach((value, i) => {
      if (value === null) {
        drawing = false;
        return;
      }
      const x = ((offset + i) * step).toFixed(1);
      const y = (CHART_HEIGHT - 1 - (value / top) * (CHART_HEIGHT - 12)).toFixed(1);
      // A point with none beside it is drawn as a dot (a round cap on a tiny line).
      path += drawing ? `L${x} ${y} ` : `M${x} ${y} l0.01 0 `;
      drawing = true;
    });
    this.line.setAttribute("d", path.trim());
    this.label.textContent = values.length ? `max ${formatSeconds(Math.max(...values))}` : "no waits";
  }
}
