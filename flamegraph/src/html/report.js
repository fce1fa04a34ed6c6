(function () {
  'use strict';
  var t0 = performance.now();
  var D = JSON.parse(document.getElementById('ftprof-data').textContent);
  var F = ftprof, el = F.el;
  var state = { mode: D.mode, idle: D.idle, thread: 'all', lock: null };

  // Header.
  document.getElementById('title').textContent = D.title;
  document.getElementById('title').title = D.title;
  document.title = D.title;
  document.getElementById('subtitle').textContent = D.header.command;
  var facts = [
    ['Python', D.header.python], ['GIL', D.header.gil], ['pid', D.header.pid],
    ['duration', D.header.duration_s.toFixed(2) + ' s'], ['threads', D.header.threads],
    ['CPU samples', D.header.samples + ' at ' + D.header.rate_hz + ' Hz'], ['lost records', D.header.lost_records],
    ['off-CPU stacks', D.header.wait_mode], ['thread time', F.fmtUs(D.header.thread_time_us)]
  ];
  var dl = document.getElementById('facts');
  facts.forEach(function (f) {
    var d = el('div'); d.appendChild(el('dt', null, f[0])); d.appendChild(el('dd', null, String(f[1]))); dl.appendChild(d);
  });
  D.header.notes.forEach(function (n) { document.getElementById('notes').appendChild(el('li', null, n)); });

  // Controls.
  document.getElementById('mode-' + state.mode).checked = true;
  document.getElementById('idle').checked = state.idle;
  var sel = document.getElementById('thread');
  sel.appendChild(el('option', { value: 'all' }, 'all threads'));
  D.threads.forEach(function (t) { sel.appendChild(el('option', { value: String(t[0]) }, t[1] + ' — ' + F.fmtUs(t[2]))); });
  F.legend(D, document.getElementById('legend'));

  function weight(st) {
    if (state.mode === 'blame') return st[4];
    var c = D.categories[st[2]];
    if (!state.idle && c.idle) return 0;
    var cpu = st[3] * D.period_us, all = cpu + st[4];
    if (state.mode === 'cpu') return cpu;
    if (state.mode === 'wait') return (c.on_cpu && !c.contention) ? 0 : all;
    return all;
  }
  function leafName(st) { var f = st[1][st[1].length - 1]; return D.frames[f][0]; }
  // Blame stacks start at their lock (labelled as the lock row's leaf).
  function rootName(st) { return D.frames[st[1][0]][0]; }
  var modeText = {
    wall: 'thread time (running and waiting)', cpu: 'CPU time', wait: 'waiting time (the lock as the leaf)',
    blame: 'time others waited, by the lock\'s holder (the lock as the root)'
  };
  var emptyText = {
    wait: ' (no waiting; tick "idle waits" to see sleeps and joins)',
    blame: ' (no thread waited on a lock, critical section or PyMutex; the thread filter picks holders here)'
  };

  var chartNode = document.getElementById('chart');
  var chart = null;
  function data() {
    var all = state.mode === 'blame' ? D.blame : D.stacks;
    var stacks = state.thread === 'all' ? all : all.filter(function (s) { return String(s[0]) === state.thread; });
    var end = state.mode === 'blame' ? rootName : leafName;
    var mark = state.lock === null ? null : function (st) { return end(st) === state.lock; };
    return F.tree(D, 'all — ' + modeText[state.mode], stacks, weight, mark);
  }
  // Rendered: the root frame spans the chart (d3 lays frames out on animation frames).
  function settled(done) {
    var tries = 0;
    (function check() {
      var svg = chartNode.querySelector('svg'), r = chartNode.querySelector('svg g rect');
      var ok = svg && r && Math.abs(parseFloat(r.getAttribute('width')) - parseFloat(svg.getAttribute('width'))) < 1;
      if (ok || ++tries > 300) done(); else requestAnimationFrame(check);
    })();
  }
  function draw() {
    document.body.setAttribute('data-rendered', '0');
    // Blame weighs lock waits only: idle waits do not apply.
    document.getElementById('idle').disabled = state.mode === 'blame';
    var root = data();
    chartNode.textContent = '';
    chart = null;
    if (!(root.value > 0)) {
      chartNode.appendChild(el('div', { class: 'empty' }, 'Nothing recorded in this view' + (emptyText[state.mode] || '') + '.'));
      document.body.setAttribute('data-rendered', '1');
      return;
    }
    var total = root.value;
    chart = flamegraph()
      .width(Math.max(600, chartNode.clientWidth || 1200))
      .cellHeight(18)
      .minFrameSize(1)
      .transitionDuration(0)
      .inverted(false)
      .sort(true)
      .setColorMapper(function (d, orig) {
        if (d.highlight) return '#e600e6';
        if (state.lock !== null && !d.data.hl) return '#e6e6e6';
        return F.colorOf(D, d.data);
      })
      .setLabelHandler(function (d) {
        return d.data.name + ' — ' + F.fmtUs(d.value) + ' (' + (100 * d.value / total).toFixed(2) + ' %)';
      })
      .setDetailsElement(document.getElementById('details'));
    d3.select(chartNode).datum(root).call(chart);
    var term = document.getElementById('search').value;
    if (term) chart.search(term);
    settled(function () {
      if (window.ftprofRenderMs === undefined) window.ftprofRenderMs = performance.now() - t0;
      document.body.setAttribute('data-rendered', '1');
    });
  }

  document.querySelectorAll('input[name=mode]').forEach(function (r) {
    r.addEventListener('change', function () { state.mode = r.value; draw(); });
  });
  document.getElementById('idle').addEventListener('change', function (e) { state.idle = e.target.checked; draw(); });
  sel.addEventListener('change', function () { state.thread = sel.value; draw(); });
  document.getElementById('search').addEventListener('input', function (e) {
    if (!chart) return;
    if (e.target.value) chart.search(e.target.value); else chart.clear();
  });
  document.getElementById('reset').addEventListener('click', function () { if (chart) chart.resetZoom(); });
  window.addEventListener('resize', function () { if (chart) { chart.width(Math.max(600, chartNode.clientWidth)); chart.update(); } });

  // Where time went.
  var vt = document.getElementById('verdict');
  vt.textContent = D.verdict || 'No category of contention takes 5 % of thread time or more.';
  var tb = document.querySelector('#time tbody');
  var catColor = {};
  D.categories.forEach(function (c) { catColor[c.name] = c.color; });
  D.time.forEach(function (r) {
    if (r.share < 0.001) return;
    var tr = el('tr');
    tr.appendChild(el('td', null, r.category + (r.contention ? ' (contention)' : '')));
    tr.appendChild(el('td', { class: 'num' }, F.fmtUs(r.time_us)));
    tr.appendChild(el('td', { class: 'num' }, (100 * r.share).toFixed(1) + ' %'));
    var td = el('td'), bar = el('span', { class: 'bar' });
    bar.style.width = Math.max(1, 300 * r.share) + 'px';
    bar.style.background = catColor[r.category] || '#999';
    td.appendChild(bar); tr.appendChild(td); tb.appendChild(tr);
  });

  // Top locks.
  var locks = D.locks.slice();
  var lt = document.getElementById('locks');
  function renderLocks() {
    var body = lt.querySelector('tbody');
    body.textContent = '';
    if (!locks.length) {
      var tr0 = el('tr'); tr0.appendChild(el('td', { colspan: '8', class: 'empty' }, 'No lock or other contention site was seen.')); body.appendChild(tr0);
      return;
    }
    locks.forEach(function (l) {
      var tr = el('tr', { 'data-leaf': l.leaf });
      if (state.lock === l.leaf) tr.classList.add('selected');
      tr.appendChild(el('td', null, l.kind));
      tr.appendChild(el('td', null, l.description));
      tr.appendChild(el('td', { class: 'num' }, F.fmtUs(l.total_us)));
      tr.appendChild(el('td', { class: 'num' }, l.waits ? String(l.waits) : (l.samples + ' samples')));
      tr.appendChild(el('td', { class: 'num' }, l.waits ? F.fmtUs(l.max_us) : '—'));
      tr.appendChild(el('td', { class: 'num' }, String(l.threads)));
      tr.appendChild(el('td', { class: 'lines-cell' }, l.top_lines.slice(0, 3).map(function (x) { return x[0] + ' ' + F.fmtUs(x[1]); }).join('\n')));
      // Held by: the holder's code that made the others wait, with that time and its share.
      tr.appendChild(el('td', { class: 'lines-cell held-by' }, l.held_by.length ? l.held_by.slice(0, 3).map(function (h) {
        return h[0] + (h[1] ? ' in ' + h[1] : '') + ' ' + F.fmtUs(h[2]) + ' (' + (100 * h[3]).toFixed(0) + ' %)';
      }).join('\n') : '—'));
      tr.addEventListener('click', function () {
        state.lock = state.lock === l.leaf ? null : l.leaf;
        document.getElementById('clear-lock').hidden = state.lock === null;
        renderLocks();
        draw();
        document.getElementById('flame-section').scrollIntoView({ behavior: 'instant', block: 'start' });
      });
      body.appendChild(tr);
    });
  }
  F.sortable(lt, locks, renderLocks);
  renderLocks();
  document.getElementById('clear-lock').addEventListener('click', function (e) {
    state.lock = null; e.target.hidden = true; renderLocks(); draw();
  });

  // Top waiting lines.
  var lb = document.querySelector('#lines tbody');
  if (!D.lines.length) { var tr1 = el('tr'); tr1.appendChild(el('td', { colspan: '3', class: 'empty' }, 'No Python line waited or spun.')); lb.appendChild(tr1); }
  D.lines.forEach(function (l) {
    var tr = el('tr');
    tr.appendChild(el('td', { class: 'lines-cell' }, l[0]));
    tr.appendChild(el('td', { class: 'num' }, F.fmtUs(l[1])));
    tr.appendChild(el('td', { class: 'num' }, String(l[2])));
    lb.appendChild(tr);
  });

  draw();
})();
