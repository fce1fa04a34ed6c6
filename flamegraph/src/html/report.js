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
      .setDetailsElement(document.getElementById('details'))
      .onClick(function (d) { if (d && d.data && d.data.name) window.ftprofFrameToSource(d.data.name); });
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

  // Findings: each with its line (a link into the source view) and its stacks (highlighted in
  // the flamegraph through their wait leaf).
  var srcSel = document.getElementById('source-file');
  var srcNode = document.getElementById('source');
  var fl = document.getElementById('findings');
  function showFinding(i) {
    var f = D.findings[i];
    fl.querySelectorAll('li').forEach(function (li, j) { li.classList.toggle('selected', j === i); });
    if (f.source) showSource(f.source[0], f.source[1], false);
    var hasLeaf = D.stacks.some(function (st) { return leafName(st) === f.leaf; });
    state.lock = hasLeaf ? f.leaf : null;
    document.getElementById('clear-lock').hidden = state.lock === null;
    renderLocks();
    draw();
  }
  if (!D.findings.length) {
    fl.appendChild(el('li', { class: 'empty' }, 'Nothing to change for scaling: no known pitfall matched and no contention reached 3 % of the active thread time.'));
  }
  D.findings.forEach(function (f, i) {
    var li = el('li', { id: 'finding-' + i, 'data-id': f.id });
    var head = el('div');
    head.appendChild(el('span', { class: 'ftitle' + (f.generic ? ' generic' : '') }, f.title));
    if (f.site) { head.appendChild(document.createTextNode(' at ')); head.appendChild(el('span', { class: 'fsite' }, f.site)); }
    if (f.gain) head.appendChild(document.createTextNode(' — ' + f.gain));
    li.appendChild(head);
    li.appendChild(el('div', { class: 'fremedy' }, f.remedy));
    li.appendChild(el('div', { class: 'fevidence' }, f.evidence));
    if (f.citation) li.appendChild(el('div', { class: 'fcite' }, 'see: ' + f.citation));
    li.addEventListener('click', function () { showFinding(i); });
    fl.appendChild(li);
  });

  // Source view: per line, thread time by category (innermost Python frame), the findings on it.
  var catByIndex = D.categories;
  D.sources.forEach(function (f, i) { srcSel.appendChild(el('option', { value: String(i) }, f.name + ' — ' + f.path)); });
  var currentSource = -1;
  function lineId(fi, n) { return 'src-' + fi + '-' + n; }
  function renderSource(fi) {
    currentSource = fi;
    srcSel.value = String(fi);
    srcNode.textContent = '';
    var f = D.sources[fi];
    if (!f) { srcNode.appendChild(el('div', { class: 'empty' }, 'No source file of the program could be read where this report was made.')); return; }
    document.getElementById('source-path').textContent = f.path;
    var per = {};
    f.lines.forEach(function (l) { per[l[0]] = l[1]; });
    var marks = {};
    D.findings.forEach(function (g, gi) { if (g.source && g.source[0] === fi) (marks[g.source[1]] = marks[g.source[1]] || []).push(gi); });
    var max = 1;
    f.lines.forEach(function (l) { var t = l[1].reduce(function (a, c) { return a + c[1]; }, 0); if (t > max) max = t; });
    var table = el('table'), body = el('tbody');
    f.text.forEach(function (code, k) {
      var n = k + 1, cats = per[n] || [];
      var cpu = 0, wait = 0, cont = 0;
      cats.forEach(function (c) {
        var info = catByIndex[c[0]];
        if (info.on_cpu && !info.contention) cpu += c[1]; else wait += c[1];
        if (info.contention) cont += c[1];
      });
      var tr = el('tr', { id: lineId(fi, n), 'data-line': String(n) });
      tr.appendChild(el('td', { class: 'ln' }, String(n)));
      tr.appendChild(el('td', { class: 't', title: 'CPU (running)' }, cpu ? F.fmtUs(cpu) : ''));
      tr.appendChild(el('td', { class: 't', title: 'waiting, stalls and contention' }, wait ? F.fmtUs(wait) : ''));
      tr.appendChild(el('td', { class: 't', title: 'of which contention' }, cont ? F.fmtUs(cont) : ''));
      var bars = el('td', { class: 'bars' });
      cats.forEach(function (c) {
        var b = el('span', { class: 'bar', title: catByIndex[c[0]].name + ' ' + F.fmtUs(c[1]) });
        b.style.width = Math.max(1, 150 * c[1] / max) + 'px';
        b.style.background = catByIndex[c[0]].color;
        bars.appendChild(b);
      });
      tr.appendChild(bars);
      var td = el('td', { class: 'code' }, code);
      (marks[n] || []).forEach(function (gi) {
        var m = el('span', { class: 'fmark', 'data-finding': String(gi), title: D.findings[gi].remedy }, D.findings[gi].title);
        m.addEventListener('click', function (e) { e.stopPropagation(); showFinding(gi); document.getElementById('finding-' + gi).scrollIntoView({ behavior: 'instant', block: 'center' }); });
        td.appendChild(m);
        tr.classList.add('has-finding');
      });
      tr.appendChild(td);
      if (cats.length) {
        tr.classList.add('hot');
        tr.addEventListener('click', function () { findInFlamegraph(f.name, n); });
      }
      body.appendChild(tr);
    });
    table.appendChild(body);
    srcNode.appendChild(table);
  }
  // Show line n of source fi (scrolled to within the source box; the page scrolls only when
  // `page`).
  function showSource(fi, n, page) {
    if (fi !== currentSource) renderSource(fi);
    srcNode.querySelectorAll('tr.target').forEach(function (t) { t.classList.remove('target'); });
    var row = document.getElementById(lineId(fi, n));
    if (!row) return;
    row.classList.add('target');
    srcNode.scrollTop = Math.max(0, row.offsetTop - srcNode.clientHeight / 2);
    if (page) document.getElementById('source-section').scrollIntoView({ behavior: 'instant', block: 'start' });
  }
  // A source line → its frames in the flamegraph (search marks them).
  function findInFlamegraph(name, n) {
    var term = '\\(' + name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + ':' + n + '\\)';
    var box = document.getElementById('search');
    box.value = term;
    if (chart) chart.search(term);
    document.body.setAttribute('data-source-search', term);
    document.getElementById('flame-section').scrollIntoView({ behavior: 'instant', block: 'start' });
  }
  // A Python frame of the flamegraph → its line in the source view.
  window.ftprofFrameToSource = function (label) {
    var m = /\(([^():]+):(\d+)\)$/.exec(label || '');
    if (!m) return false;
    var fi = D.sources.findIndex(function (s) { return s.name === m[1]; });
    if (fi < 0) return false;
    // Zooming clicks stay on the flamegraph: the source view follows without moving the page.
    showSource(fi, parseInt(m[2], 10), false);
    return true;
  };
  srcSel.addEventListener('change', function () { renderSource(parseInt(srcSel.value, 10)); });
  renderSource(D.findings.length && D.findings[0].source ? D.findings[0].source[0] : 0);

  draw();
})();
