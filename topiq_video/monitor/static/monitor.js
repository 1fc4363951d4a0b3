/* topiq-video live page: polls /api/streams (same origin) and keeps one card per stream.
   Every text that comes from a stream (names, URLs, errors, rule names) is set with
   textContent, never parsed as HTML. The page requests nothing but this server. */
(function () {
  'use strict';
  var body = document.body;
  var root = document.documentElement;
  var REFRESH_MS = parseInt(body.getAttribute('data-refresh-ms'), 10) || 2000;
  var SPARK_SECONDS = parseFloat(body.getAttribute('data-sparkline-seconds')) || 300;
  var FETCH_TIMEOUT_MS = Math.max(REFRESH_MS * 3, 5000);
  var grid = document.getElementById('streams');
  var template = document.getElementById('card-template');
  var cards = new Map();  // stream name -> {el, thumb, sparkKey}
  var updates = 0;
  var lastOk = null;

  function $(el, sel) { return el.querySelector(sel); }
  function setText(el, text) {
    var t = text === null || text === undefined ? '' : String(text);
    if (el.textContent !== t) el.textContent = t;
  }
  function fmtScore(v) { return v === null || v === undefined ? '–' : v.toFixed(3); }
  function fmtInt(v) { return v === null || v === undefined ? '–' : Math.round(v).toLocaleString('en-US'); }
  function fmtDuration(s) {
    if (s === null || s === undefined || !isFinite(s)) return '–';
    s = Math.max(0, s);
    if (s < 10) return s.toFixed(1) + ' s';
    if (s < 90) return Math.round(s) + ' s';
    if (s < 5400) return Math.round(s / 60) + ' min';
    if (s < 172800) return (s / 3600).toFixed(1) + ' h';
    return (s / 86400).toFixed(1) + ' d';
  }
  function fmtBytes(b) {
    if (b === null || b === undefined) return '–';
    var units = ['B', 'kB', 'MB', 'GB', 'TB'];
    var i = 0;
    while (b >= 1000 && i < units.length - 1) { b /= 1000; i++; }
    return (i ? b.toFixed(1) : String(b)) + ' ' + units[i];
  }
  function fmtClock(unix) {
    var d = new Date(unix * 1000);
    return d.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit', second: '2-digit'});
  }
  function fmtFps(v) {
    if (v === null || v === undefined) return null;
    return (Math.round(v * 100) / 100) + ' fps';
  }

  function makeCard(name) {
    var el = template.content.firstElementChild.cloneNode(true);
    setText($(el, '.name'), name);
    $(el, '.name').title = name;
    var card = {el: el, thumb: null, sparkDrawn: false};
    cards.set(name, card);
    return card;
  }

  function updateCard(card, s, now) {
    var el = card.el;
    el.setAttribute('data-up', s.up ? 'true' : 'false');
    el.setAttribute('data-alerting', s.alerts.length ? 'true' : 'false');
    setText($(el, '.state'), s.up ? 'up' : 'down');
    setText($(el, '.url'), s.url);
    $(el, '.url').title = s.url;

    setText($(el, '.score-now'), fmtScore(s.score));
    setText($(el, '.score-1m'), fmtScore(s.scores['1m'].mean));
    el.querySelectorAll('.windows td').forEach(function (td) {
      var w = s.scores[td.getAttribute('data-window')] || {};
      setText(td, fmtScore(w[td.getAttribute('data-stat')]));
    });

    // Thumbnail: the URL changes with the picture, so an unchanged picture is not fetched again.
    var img = $(el, '.thumb img');
    if (s.thumbnail !== card.thumb) {
      card.thumb = s.thumbnail;
      if (s.thumbnail) {
        img.src = s.thumbnail;
        img.alt = 'latest picture of ' + s.name;
      } else {
        img.removeAttribute('src');
      }
    }
    img.hidden = !s.thumbnail;
    $(el, '.no-picture').hidden = !!s.thumbnail;

    $(el, '.detectors').querySelectorAll('li').forEach(function (li) {
      var on = !!s.detectors[li.getAttribute('data-kind')];
      li.className = on ? 'on' : '';
    });

    var alertBox = $(el, '.alerts');
    var list = $(alertBox, 'ul');
    alertBox.hidden = s.alerts.length === 0;
    var items = s.alerts.map(function (a) {
      var li = document.createElement('li');
      var rule = document.createElement('b');
      rule.textContent = a.rule;
      li.appendChild(rule);
      var since = document.createElement('span');
      since.className = 'since';
      since.textContent = 'since ' + fmtClock(a.since) + ' (' + fmtDuration(now - a.since) + ')';
      li.appendChild(since);
      if (a.value !== null) {
        var val = document.createElement('span');
        val.className = 'val';
        val.textContent = 'value ' + a.value.toPrecision(3) +
          (a.threshold !== null ? ' / threshold ' + a.threshold.toPrecision(3) : '');
        li.appendChild(val);
      }
      if (a.evidence) {
        var ev = document.createElement('span');
        ev.className = 'evidence';
        ev.textContent = 'evidence: ' + a.evidence;
        li.appendChild(ev);
      }
      return li;
    });
    list.replaceChildren.apply(list, items);

    var c = s.counters;
    setText($(el, '.c-reconnects'), fmtInt(c.reconnects));
    setText($(el, '.c-skipped'), fmtInt(c.frames_skipped));
    setText($(el, '.c-decode-errors'), fmtInt(c.decode_errors));
    setText($(el, '.c-lost'), fmtInt(c.lost_frames));
    setText($(el, '.c-outage'), fmtDuration(c.outage_seconds));
    setText($(el, '.c-bytes'), fmtBytes(c.received_bytes));
    $(el, '.c-reconnects').className = 'c-reconnects' + (c.reconnects ? ' nonzero' : '');
    $(el, '.c-skipped').className = 'c-skipped' + (c.frames_skipped ? ' nonzero' : '');
    $(el, '.c-decode-errors').className = 'c-decode-errors' + (c.decode_errors ? ' nonzero' : '');

    var fmt = [];
    if (s.info) {
      fmt.push(s.info.codec, s.info.width + '×' + s.info.height);
      if (s.info.fps !== null) fmt.push(fmtFps(s.info.fps));
      if (!s.info.has_audio) fmt.push('no audio');
    }
    if (s.measured_fps !== null) fmt.push('measured ' + fmtFps(s.measured_fps));
    fmt.push(s.model);
    setText($(el, '.format'), fmt.join(' · '));

    var seen;
    if (s.up) {
      seen = s.last_frame_time !== null
        ? 'last frame ' + fmtDuration(now - s.last_frame_time) + ' ago' : 'connected, no frame yet';
      if (s.connected_since !== null) seen += ' · connected for ' + fmtDuration(now - s.connected_since);
    } else {
      seen = s.last_frame_time !== null
        ? 'down · last frame at ' + fmtClock(s.last_frame_time) + ' (' + fmtDuration(now - s.last_frame_time) + ' ago)'
        : 'down · no frame received yet';
    }
    setText($(el, '.seen'), seen);
    var err = $(el, '.error');
    err.hidden = !s.last_error;
    setText(err, s.last_error);

    drawSparkline(card, s, now);
  }

  function drawSparkline(card, s, now) {
    if (typeof Plotly === 'undefined') return;
    var div = $(card.el, '.spark');
    var x = s.sparkline.t.map(function (t) { return t * 1000; });
    var color = s.up ? '#2563eb' : '#94a3b8';
    var trace = {
      x: x, y: s.sparkline.score, type: 'scatter', mode: 'lines',
      line: {color: color, width: 1.6, shape: 'linear'}, connectgaps: false,
      fill: 'tozeroy', fillcolor: s.up ? 'rgba(37,99,235,0.08)' : 'rgba(148,163,184,0.12)',
      hovertemplate: '%{y:.3f}<extra></extra>'
    };
    var ys = s.sparkline.score.filter(function (v) { return v !== null; });
    var lo = ys.length ? Math.min.apply(null, ys) : 0;
    var hi = ys.length ? Math.max.apply(null, ys) : 1;
    var pad = Math.max((hi - lo) * 0.15, 0.02);
    var layout = {
      height: 70, margin: {l: 34, r: 6, t: 4, b: 4},
      paper_bgcolor: 'rgba(0,0,0,0)', plot_bgcolor: 'rgba(0,0,0,0)',
      showlegend: false,
      xaxis: {type: 'date', visible: false, range: [(now - SPARK_SECONDS) * 1000, now * 1000],
              fixedrange: true},
      yaxis: {range: [Math.max(0, lo - pad), hi + pad], nticks: 3, tickfont: {size: 10, color: '#667085'},
              gridcolor: '#eef2f7', zeroline: false, fixedrange: true, tickformat: '.2f'},
      font: {family: 'system-ui, sans-serif'}
    };
    var config = {displayModeBar: false, responsive: true};
    Plotly.react(div, [trace], layout, config);
    card.sparkDrawn = true;
  }

  function render(doc) {
    var now = doc.now;
    var seen = new Set();
    var up = 0, down = 0, alerts = 0;
    doc.streams.forEach(function (s, i) {
      seen.add(s.name);
      var card = cards.get(s.name) || makeCard(s.name);
      if (grid.children[i] !== card.el) grid.insertBefore(card.el, grid.children[i] || null);
      updateCard(card, s, now);
      if (s.up) up++; else down++;
      alerts += s.alerts.length;
    });
    cards.forEach(function (card, name) {
      if (!seen.has(name)) {
        if (typeof Plotly !== 'undefined') Plotly.purge($(card.el, '.spark'));
        card.el.remove();
        cards.delete(name);
      }
    });
    setText(document.getElementById('count-up'), up);
    setText(document.getElementById('count-down'), down);
    setText(document.getElementById('count-alerts'), alerts);
    document.getElementById('empty').hidden = doc.streams.length !== 0;
    root.setAttribute('data-down', String(down));
    root.setAttribute('data-alerts', String(alerts));
  }

  function showProblem(message) {
    var banner = document.getElementById('banner');
    banner.hidden = !message;
    setText(banner, message || '');
  }

  function tick() {
    var ctrl = new AbortController();
    var timer = setTimeout(function () { ctrl.abort(); }, FETCH_TIMEOUT_MS);
    fetch('/api/streams', {cache: 'no-store', signal: ctrl.signal, credentials: 'same-origin'})
      .then(function (r) {
        if (!r.ok) throw new Error('the monitor answered ' + r.status);
        return r.json();
      })
      .then(function (doc) {
        render(doc);
        lastOk = Date.now();
        updates++;
        root.setAttribute('data-updates', String(updates));
        root.setAttribute('data-state', 'ok');
        showProblem(null);
        setText(document.getElementById('updated'), 'updated ' + fmtClock(doc.now));
      })
      .catch(function (err) {
        root.setAttribute('data-state', 'stale');
        var since = lastOk ? ' (last update ' + fmtDuration((Date.now() - lastOk) / 1000) + ' ago)' : '';
        showProblem('Cannot reach the monitor: ' + (err && err.message ? err.message : err) + since +
          '. Showing the last known state; retrying every ' + (REFRESH_MS / 1000) + ' s.');
        // Expected while the monitor restarts: a warning, not a page error.
        console.warn('topiq-video: refresh failed', err);
      })
      .finally(function () {
        clearTimeout(timer);
        setTimeout(tick, REFRESH_MS);
      });
  }

  if (typeof Plotly === 'undefined') {
    console.error('plotly.js failed to load from /static/plotly.min.js');
  }
  tick();
}());
