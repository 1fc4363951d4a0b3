/* topiq-video batch index page: filters the items table by text and status (inlined after
   report.js, which sorts the table and draws the figures). */
(function () {
  'use strict';
  var text = document.getElementById('filter-text');
  var status = document.getElementById('filter-status');
  var count = document.getElementById('filter-count');
  var table = document.getElementById('items-table');
  if (!text || !status || !count || !table) return;
  function apply() {
    var query = text.value.trim().toLowerCase();
    var wanted = status.value;
    var rows = table.tBodies[0].rows;
    var shown = 0;
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var match = (!wanted || row.getAttribute('data-status') === wanted) &&
        (!query || (row.getAttribute('data-text') || '').indexOf(query) !== -1);
      row.hidden = !match;
      if (match) shown++;
    }
    count.textContent = shown + ' of ' + rows.length + ' items shown';
  }
  text.addEventListener('input', apply);
  status.addEventListener('change', apply);
  apply();
})();
