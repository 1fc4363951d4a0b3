/* topiq-video report page: sortable tables and the plotly figures (inlined into
   report.html; it reads the figures from the JSON block and requests nothing). */
(function () {
  'use strict';
  function cellNumber(td) {
    var v = td.getAttribute('data-v');
    return v === null || v === '' ? NaN : parseFloat(v);
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      function sort() {
        var dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', dir);
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var sign = dir === 'ascending' ? 1 : -1;
        rows.sort(function (a, b) {
          var x = cellNumber(a.cells[col]), y = cellNumber(b.cells[col]);
          if (isNaN(x) && isNaN(y)) return 0;
          if (isNaN(x)) return 1;  // rows without a value stay last either way
          if (isNaN(y)) return -1;
          return sign * (x - y);
        });
        var fragment = document.createDocumentFragment();
        rows.forEach(function (r) { fragment.appendChild(r); });
        body.appendChild(fragment);
      }
      th.addEventListener('click', sort);
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); }
      });
    });
  });

  // Links with data-zoom show a time range of a figure (e.g. a scene in the timeline).
  document.addEventListener('click', function (e) {
    var link = e.target.closest ? e.target.closest('a[data-zoom]') : null;
    if (!link || typeof Plotly === 'undefined') return;
    var el = document.getElementById(link.getAttribute('data-zoom'));
    var x0 = parseFloat(link.getAttribute('data-x0'));
    var x1 = parseFloat(link.getAttribute('data-x1'));
    if (el && el.layout && isFinite(x0) && isFinite(x1)) {
      Plotly.relayout(el, {'xaxis.range': [x0, x1]});
    }
  });

  var root = document.documentElement;
  var figures = JSON.parse(document.getElementById('report-figures').textContent);
  if (typeof Plotly === 'undefined') {
    root.setAttribute('data-rendered', 'error');
    console.error('plotly.js failed to load');
    return;
  }
  var config = {
    displaylogo: false,
    responsive: true,
    modeBarButtonsToRemove: ['select2d', 'lasso2d', 'autoScale2d']
  };
  Promise.all(figures.map(function (f) {
    var el = document.getElementById(f.id);
    if (!el) {
      return Promise.reject(new Error('no element for figure ' + f.id));
    }
    return Plotly.newPlot(el, f.data, f.layout, config);
  })).then(function () {
    root.setAttribute('data-rendered', 'true');
  }, function (err) {
    root.setAttribute('data-rendered', 'error');
    console.error(err);
  });
})();
