/* Small canvas charts for the dashboard: a time-series line chart and a grouped bar chart.
 *
 * Our own ~200 lines rather than a library: the page loads nothing from elsewhere (strict CSP, no build
 * step), and it needs only two chart kinds. Colours come from the page's CSS variables, so charts follow
 * Telegram's theme. Canvases are sized for the device pixel ratio so lines stay sharp on phones.
 */
(function () {
  "use strict";

  var PAD = { left: 38, right: 8, top: 8, bottom: 20 };

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function prepare(canvas) {
    var ratio = window.devicePixelRatio || 1;
    var width = Math.max(120, canvas.clientWidth || 300);
    var height = Math.max(80, canvas.clientHeight || 150);
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px system-ui, sans-serif";
    return { ctx: ctx, width: width, height: height };
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    var power = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * power >= value) return steps[i] * power;
    }
    return 10 * power;
  }

  function formatNumber(value) {
    var abs = Math.abs(value);
    if (abs >= 1e9) return (value / 1e9).toFixed(1) + "G";
    if (abs >= 1e6) return (value / 1e6).toFixed(1) + "M";
    if (abs >= 1e4) return (value / 1e3).toFixed(0) + "k";
    if (abs >= 100 || Number.isInteger(value)) return String(Math.round(value));
    if (abs < 1) return String(Number(value.toPrecision(2)));
    return value.toFixed(1);
  }

  function grid(ctx, area, yMax, unit) {
    ctx.strokeStyle = cssVar("--grid", "rgba(127,127,127,0.25)");
    ctx.fillStyle = cssVar("--hint", "#888");
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (var i = 0; i <= 4; i++) {
      var y = area.top + area.height - (area.height * i) / 4;
      ctx.beginPath();
      ctx.moveTo(area.left, Math.round(y) + 0.5);
      ctx.lineTo(area.left + area.width, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillText(formatNumber((yMax * i) / 4) + (i === 4 && unit ? unit : ""), area.left - 4, y);
    }
  }

  function plotArea(size) {
    return {
      left: PAD.left,
      top: PAD.top,
      width: size.width - PAD.left - PAD.right,
      height: size.height - PAD.top - PAD.bottom
    };
  }

  function timeLabel(seconds) {
    var date = new Date(seconds * 1000);
    return String(date.getHours()).padStart(2, "0") + ":" + String(date.getMinutes()).padStart(2, "0") + ":" +
      String(date.getSeconds()).padStart(2, "0");
  }

  /**
   * Lines over time. options.series: [{color: "--series-1", points: [[t, value], ...]}]; options.yMax
   * fixes the scale (100 for percentages), otherwise it fits the data. Returns the number of points drawn.
   */
  function line(canvas, options) {
    var size = prepare(canvas);
    var ctx = size.ctx;
    var area = plotArea(size);
    var all = [];
    options.series.forEach(function (series) {
      series.points.forEach(function (point) { if (point[1] !== null && isFinite(point[1])) all.push(point); });
    });
    var yMax = options.yMax || niceMax(Math.max.apply(null, all.map(function (p) { return p[1]; }).concat([1])) * 1.1);
    grid(ctx, area, yMax, options.unit || "");
    if (!all.length) return 0;
    var tMin = Math.min.apply(null, all.map(function (p) { return p[0]; }));
    var tMax = Math.max.apply(null, all.map(function (p) { return p[0]; }));
    var span = Math.max(1, tMax - tMin);
    function x(t) { return area.left + ((t - tMin) / span) * area.width; }
    function y(v) { return area.top + area.height - (Math.min(Math.max(v, 0), yMax) / yMax) * area.height; }

    ctx.fillStyle = cssVar("--hint", "#888");
    ctx.textBaseline = "top";
    ctx.textAlign = "left";
    ctx.fillText(timeLabel(tMin), area.left, area.top + area.height + 5);
    ctx.textAlign = "right";
    ctx.fillText(timeLabel(tMax), area.left + area.width, area.top + area.height + 5);

    var drawn = 0;
    options.series.forEach(function (series) {
      var points = series.points.filter(function (p) { return p[1] !== null && isFinite(p[1]); });
      if (!points.length) return;
      ctx.strokeStyle = cssVar(series.color, "#2481cc");
      ctx.fillStyle = ctx.strokeStyle;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.beginPath();
      points.forEach(function (p, index) {
        if (index === 0) ctx.moveTo(x(p[0]), y(p[1]));
        else ctx.lineTo(x(p[0]), y(p[1]));
      });
      ctx.stroke();
      var last = points[points.length - 1];
      ctx.beginPath();
      ctx.arc(x(last[0]), y(last[1]), 3, 0, 2 * Math.PI);
      ctx.fill();
      drawn += points.length;
    });
    return drawn;
  }

  /**
   * Grouped bars. options.labels: category names; options.series: [{color, values: [...]}] (one value per
   * label). Returns the number of non-zero bars drawn.
   */
  function bars(canvas, options) {
    var size = prepare(canvas);
    var ctx = size.ctx;
    var area = plotArea(size);
    var values = [];
    options.series.forEach(function (series) { values = values.concat(series.values.filter(isFinite)); });
    var yMax = niceMax(Math.max.apply(null, values.concat([1])) * 1.1);
    grid(ctx, area, yMax, options.unit || "");
    var groups = options.labels.length;
    if (!groups) return 0;
    var groupWidth = area.width / groups;
    var barWidth = Math.max(2, Math.min(28, (groupWidth * 0.7) / options.series.length));
    var drawn = 0;
    options.labels.forEach(function (label, index) {
      var start = area.left + groupWidth * index + (groupWidth - barWidth * options.series.length) / 2;
      options.series.forEach(function (series, s) {
        var value = Number(series.values[index]) || 0;
        var height = (Math.min(Math.max(value, 0), yMax) / yMax) * area.height;
        ctx.fillStyle = cssVar(series.color, "#2481cc");
        ctx.fillRect(start + s * barWidth, area.top + area.height - height, barWidth - 1, height);
        if (height > 0) drawn += 1;
      });
      if (groups <= 12 || index % Math.ceil(groups / 8) === 0) {
        ctx.fillStyle = cssVar("--hint", "#888");
        ctx.textAlign = "center";
        ctx.textBaseline = "top";
        ctx.fillText(String(label).slice(0, 10), area.left + groupWidth * (index + 0.5), area.top + area.height + 5);
      }
    });
    return drawn;
  }

  window.DepuCharts = { line: line, bars: bars, formatNumber: formatNumber };
})();
