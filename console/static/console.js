/* The console's own script: charts (uPlot), keyboard navigation of the list,
   copy buttons, SQL history. No inline script anywhere: this file is all there is.
   Everything runs again after htmx swaps content in (htmx:load). */
(function () {
  "use strict";

  var PALETTE = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2",
                 "#be185d", "#4d7c0f"];

  function charts(root) {
    var data = document.getElementById("chart-data");
    if (!data || !window.uPlot) return;
    var specs = JSON.parse(data.textContent);
    specs.forEach(function (spec) {
      var fig = root.querySelector('[data-chart="' + spec.id + '"] .plot');
      if (!fig || fig.dataset.drawn) return;
      fig.dataset.drawn = "1";
      var width = Math.max(280, fig.clientWidth || 480);
      var series = [{label: "time (UTC)"}];
      var columns = [spec.x];
      spec.series.forEach(function (s, i) {
        series.push({label: s.label, stroke: PALETTE[i % PALETTE.length], width: 1.5,
                     spanGaps: false, points: {show: spec.x.length < 60}});
        columns.push(s.values);
      });
      var opts = {
        width: width, height: 220, tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
        series: series,
        axes: [{label: "time (UTC)", stroke: "#374151"},
               {label: spec.unit, stroke: "#374151", size: 60}],
        legend: {live: true},
        scales: {x: {time: true}}
      };
      new uPlot(opts, columns, fig);
    });
  }

  /* -- the list: j / k move, Enter opens, / focuses the search ----------------------- */
  var selected = -1;
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("#rows tbody tr")); }
  function select(i) {
    var rs = rows();
    if (!rs.length) return;
    i = Math.max(0, Math.min(rs.length - 1, i));
    rs.forEach(function (r) { r.classList.remove("selected"); r.removeAttribute("aria-selected"); });
    rs[i].classList.add("selected");
    rs[i].setAttribute("aria-selected", "true");
    var link = rs[i].querySelector("a.open");
    if (link) link.focus({preventScroll: true});
    rs[i].scrollIntoView({block: "nearest"});
    selected = i;
  }
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey && e.key === "Enter" && e.target.id === "sql") {
      e.preventDefault();
      var form = document.getElementById("sql-form");
      if (form) form.requestSubmit();
      return;
    }
    var t = e.target;
    var typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
    if (typing || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === "/") {
      var s = document.getElementById("search");
      if (s) { e.preventDefault(); s.focus(); }
    } else if (e.key === "j") {
      select(selected + 1);
    } else if (e.key === "k") {
      select(selected < 0 ? 0 : selected - 1);
    } else if (e.key === "Enter" && selected >= 0) {
      var r = rows()[selected];
      if (r && r.dataset.href) { e.preventDefault(); window.location.assign(r.dataset.href); }
    }
  });

  /* -- copy buttons ------------------------------------------------------------------ */
  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest("[data-copy]");
    if (!b) return;
    var text = b.getAttribute("data-copy");
    var done = function () { var old = b.textContent; b.textContent = "Copied"; setTimeout(function () { b.textContent = old; }, 1200); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
    } else {
      var ta = document.createElement("textarea");
      ta.value = text; document.body.appendChild(ta); ta.select();
      try { document.execCommand("copy"); done(); } catch (err) { /* nothing */ }
      ta.remove();
    }
  });

  /* -- SQL: history in this browser; downloads are plain form posts ------------------ */
  var KEY = "istore.sql.history";
  function history() { try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch (e) { return []; } }
  function showHistory() {
    var list = document.getElementById("sql-history");
    if (!list) return;
    list.textContent = "";
    history().forEach(function (q) {
      var li = document.createElement("li");
      var b = document.createElement("button");
      b.type = "button"; b.className = "link"; b.textContent = q.length > 120 ? q.slice(0, 119) + "…" : q;
      b.title = "Put this query back in the editor";
      b.addEventListener("click", function () { document.getElementById("sql").value = q; });
      li.appendChild(b); list.appendChild(li);
    });
  }
  document.addEventListener("submit", function (e) {
    if (e.target.id !== "sql-form") return;
    var submitter = e.submitter;
    if (submitter && submitter.hasAttribute("data-no-htmx")) {
      e.stopImmediatePropagation();  /* a download: let the browser post the form */
      return;
    }
    var q = document.getElementById("sql").value.trim();
    if (!q) return;
    var h = history().filter(function (x) { return x !== q; });
    h.unshift(q);
    try { localStorage.setItem(KEY, JSON.stringify(h.slice(0, 20))); } catch (err) { /* full */ }
    showHistory();
  }, true);

  function init(root) { charts(root || document); showHistory(); }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (e) { init(e.target); });
})();
